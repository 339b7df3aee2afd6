package sched

// RunState is a thread's state as the host scheduler sees it.
type RunState uint8

const (
	// Unknown means no observation (no observer, or the thread has not
	// been seen since it was watched).
	Unknown RunState = iota
	// Sleeping means blocked: not on any runqueue.
	Sleeping
	// Runnable means on a runqueue, waiting for a CPU.
	Runnable
	// Running means on a CPU.
	Running
)

// String returns the state's lower-case name.
func (s RunState) String() string {
	switch s {
	case Sleeping:
		return "sleeping"
	case Runnable:
		return "runnable"
	case Running:
		return "running"
	}
	return "unknown"
}

// ThreadState is one observation of a thread.
type ThreadState struct {
	// State is the thread's run state.
	State RunState
	// CPU is the CPU the thread runs on (Running), is queued on
	// (Runnable) or last ran on (Sleeping); -1 if unknown.
	CPU int
	// Since is when the thread entered State, in CLOCK_MONOTONIC
	// nanoseconds (the clock of bpf_ktime_get_ns and [MonoClock]).
	Since int64
	// RunTime and WaitTime are the thread's cumulative time on a CPU
	// and runnable on a runqueue, in ns, up to its last state change
	// (the interval since Since is not included); 0 without totals.
	RunTime, WaitTime int64
	// Switches counts the times it was switched in, Wakeups the times
	// it was woken from sleep, Preemptions the times it left its CPU
	// still runnable; 0 without totals.
	Switches, Wakeups, Preemptions uint64
}

// RunTimeAt returns the thread's run time up to now, the current run
// included.
func (s *ThreadState) RunTimeAt(now int64) int64 {
	if s.State == Running && s.Since > 0 && now > s.Since {
		return s.RunTime + now - s.Since
	}
	return s.RunTime
}

// WaitTimeAt returns the thread's runqueue wait up to now, the current
// wait included.
func (s *ThreadState) WaitTimeAt(now int64) int64 {
	if s.State == Runnable && s.Since > 0 && now > s.Since {
		return s.WaitTime + now - s.Since
	}
	return s.WaitTime
}

// Observer reports the host run state of watched threads. The eBPF observer
// in sched/observer implements it; tests use simulated ones.
type Observer interface {
	// Watch starts observing thread tid and returns its slot.
	Watch(tid int) (slot int, err error)
	// Unwatch stops observing the thread in slot.
	Unwatch(slot int) error
	// Load stores the latest observation of slot into st (its totals
	// too, if the observer keeps them). It is called once per vCPU per
	// scheduling pass: it must not allocate or make system calls.
	Load(slot int, st *ThreadState)
}
