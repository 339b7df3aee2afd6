package seccomp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompFilter is seccomp(SECCOMP_SET_MODE_FILTER, flags, prog).
func seccompFilter(flags uintptr, prog *unix.SockFprog) (uintptr, unix.Errno) {
	r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(prog)))
	return r, e
}
