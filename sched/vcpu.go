package sched

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Class says what a vCPU is for, and so how policies treat it.
type Class uint8

const (
	// LatencyCritical vCPUs serve requests; a policy gives them a core as
	// soon as they wait for one.
	LatencyCritical Class = iota
	// Batch vCPUs run throughput work; a policy may preempt and
	// time-slice them.
	Batch
)

// String returns "lc" or "batch".
func (c Class) String() string {
	switch c {
	case LatencyCritical:
		return "lc"
	case Batch:
		return "batch"
	}
	return "unknown"
}

// VCPU is what the scheduler needs from a vCPU: one OS thread that runs
// guest code in a loop (KVM_RUN for a real vCPU).
//
// Semantics every implementation must keep:
//
//   - TID is the thread id of the vCPU thread (gettid on that thread); it
//     never changes for the VCPU's life, and the thread is locked to its
//     goroutine (runtime.LockOSThread) for that whole life.
//   - Kick makes the thread leave guest mode once (KVM_RUN returns; a real
//     vCPU sets kvm_run.immediate_exit and sends a real-time signal ≥ 35 with
//     tgkill). It does not wait for the exit. A kick that lands before the
//     thread enters guest mode still makes the next entry return at once.
//     After a plain Kick the thread re-enters guest mode by itself.
//   - Park asks the thread to leave guest mode (it kicks) and then block,
//     outside guest mode, until Unpark. Park returns without waiting for the
//     thread to be parked; the thread honours the request at its next exit,
//     promptly after the kick. Park on a parked vCPU is a no-op.
//   - Unpark lets a parked (or parking) thread go back to guest mode; an
//     Unpark that races a Park's kick cancels the park (the thread may then
//     not block at all). Unpark on a running vCPU is a no-op.
//   - SetAffinity sets the CPUs the thread may run on
//     (sched_setaffinity(TID, cpus)); the kernel migrates a running thread by
//     itself. An empty slice is an error.
//   - Class is fixed for the VCPU's life.
//
// All methods may be called from any goroutine, concurrently with the vCPU
// thread's own work; the scheduler calls them from its one thread, so
// implementations need not order calls from different callers beyond being
// race-free. They must not allocate or block on the vCPU thread: Kick, Park
// and Unpark are on the scheduler's µs path.
type VCPU interface {
	TID() int
	Kick() error
	Park() error
	Unpark() error
	SetAffinity(cpus []int) error
	Class() Class
}

// Grouper is an optional interface of a [VCPU]: the vCPUs whose Group
// returns the same non-empty string belong to one group (one VM), which
// policies with per-VM shares (adaptive) treat as one tenant. A VCPU that
// is no Grouper, or returns "", is a group of its own. Group is fixed for
// the VCPU's life.
type Grouper interface {
	Group() string
}

// HostPrio is the host kernel scheduling class of a vCPU thread.
type HostPrio uint8

const (
	// PrioNormal is SCHED_OTHER, every thread's default.
	PrioNormal HostPrio = iota
	// PrioIdle is SCHED_IDLE: the thread runs only when no normal
	// thread on its CPU wants to, and a normal thread waking up there
	// preempts it at once (the kernel checks this before anything else
	// at wake-up, on CFS and EEVDF alike).
	PrioIdle
)

// String returns "normal" or "idle".
func (p HostPrio) String() string {
	if p == PrioIdle {
		return "idle"
	}
	return "normal"
}

// PrioSetter is an optional interface of a [VCPU] that sets its thread's
// host scheduling class itself. The scheduler calls SetHostPrio for
// [OpPrio] actions; for a VCPU that is no PrioSetter it calls
// [SetThreadPrio] on its TID instead. slice is the thread's requested
// time slice under PrioNormal (0: the kernel's default).
type PrioSetter interface {
	SetHostPrio(p HostPrio, slice time.Duration) error
}

// Slice bounds of Linux's EEVDF custom slices (sched_attr.sched_runtime
// of a SCHED_OTHER thread, honoured from Linux 6.12; older kernels ignore
// it).
const (
	MinHostSlice = 100 * time.Microsecond
	MaxHostSlice = 100 * time.Millisecond
)

// SetThreadPrio sets thread tid of this process to p with sched_setattr;
// under PrioNormal a non-zero slice becomes its EEVDF custom slice
// (clamped to [MinHostSlice, MaxHostSlice]; ignored before Linux 6.12).
// The thread keeps its nice value. It refuses a tid that is not a thread of this process, so that a
// made-up TID can never change another process's thread.
func SetThreadPrio(tid int, p HostPrio, slice time.Duration) error {
	if tid <= 0 {
		return fmt.Errorf("sched: set priority of thread %d: not a thread id", tid)
	}
	if err := unix.Tgkill(os.Getpid(), tid, 0); err != nil {
		return fmt.Errorf("sched: set priority of thread %d: not a thread of this process: %w", tid, err)
	}
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}
	// Keep the thread's nice value: it says what the thread is worth
	// next to other processes, which is not the policy's business.
	if cur, err := unix.SchedGetAttr(tid, 0); err == nil {
		attr.Nice = cur.Nice
	}
	if p == PrioIdle {
		attr.Policy = unix.SCHED_IDLE
	} else if slice > 0 {
		attr.Runtime = uint64(min(max(slice, MinHostSlice), MaxHostSlice))
	}
	if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("sched: make thread %d %s (leaving SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE): %w", tid, p, err)
		}
		return fmt.Errorf("sched: make thread %d %s: %w", tid, p, err)
	}
	return nil
}
