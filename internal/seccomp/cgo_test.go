package seccomp

// colibri's binary links runtime/cgo (through net and os/user), so its
// threads come from pthread_create (clone3 first, then clone) and leave
// through glibc's thread exit: the tests run the same way.
import _ "net"
