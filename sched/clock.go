package sched

import _ "unsafe" // for go:linkname

// Clock gives the scheduler the time. Tests use a simulated clock.
type Clock interface {
	// Now returns CLOCK_MONOTONIC nanoseconds.
	Now() int64
}

// MonoClock reads CLOCK_MONOTONIC through the vDSO, without a system call:
// the same clock as bpf_ktime_get_ns.
type MonoClock struct{}

// Now implements [Clock].
func (MonoClock) Now() int64 { return nanotime() }

// nanotime is the runtime's CLOCK_MONOTONIC reading (vDSO); the runtime
// explicitly allows linkname access to it.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// Nanotime returns CLOCK_MONOTONIC nanoseconds (vDSO, no system call).
func Nanotime() int64 { return nanotime() }
