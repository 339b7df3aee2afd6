package threadvcpu

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// futex(2) operations (linux/futex.h).
const (
	futexWait0       = 0
	futexWake0       = 1
	futexPrivateFlag = 128
	futexWaitBitset  = 9
	futexWaitPrivate = futexWait0 | futexPrivateFlag
	futexWakePrivate = futexWake0 | futexPrivateFlag
	futexBitsetAny   = 0xffffffff
)

// futexWaitUntil blocks while *addr == val, until CLOCK_MONOTONIC reaches
// deadline (ns), or until a signal interrupts it. It returns nil when the
// deadline passed, unix.EAGAIN if *addr != val, unix.EINTR on a signal.
func futexWaitUntil(addr *uint32, val uint32, deadline int64) error {
	ts := unix.NsecToTimespec(deadline)
	_, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitBitset|futexPrivateFlag,
		uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, futexBitsetAny)
	if e == unix.ETIMEDOUT {
		return nil
	}
	if e != 0 {
		return e
	}
	return unix.EINTR // woken: treat as interrupted, the caller re-checks
}

// futexWait blocks while *addr == val (or until woken or interrupted).
func futexWait(addr *uint32, val uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitPrivate, uintptr(val), 0, 0, 0)
	if e != 0 && e != unix.EAGAIN && e != unix.EINTR {
		return e
	}
	return nil
}

// futexWake wakes up to n threads waiting on addr.
func futexWake(addr *uint32, n int) error {
	_, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakePrivate, uintptr(n), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

var errStopped = errors.New("thread vCPU stopped")
