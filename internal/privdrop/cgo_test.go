package privdrop

// colibri's binary links runtime/cgo (through net and os/user), where
// Setresuid and friends go through glibc's setxid broadcast rather than
// Go's AllThreadsSyscall: the tests run the same way. (Without this
// import they exercise AllThreadsSyscall; both passed when this was
// written.)
import _ "net"
