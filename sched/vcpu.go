package sched

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
