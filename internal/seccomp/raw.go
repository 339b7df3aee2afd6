package seccomp

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// setThreadName sets the calling thread's comm (at most 15 bytes kept).
func setThreadName(name string) {
	b := append([]byte(name), 0)
	unix.Syscall6(unix.SYS_PRCTL, unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0, 0)
}

// seccompFilter is seccomp(SECCOMP_SET_MODE_FILTER, flags, prog).
func seccompFilter(flags uintptr, prog *unix.SockFprog) (uintptr, unix.Errno) {
	r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(prog)))
	return r, e
}
