package threadvcpu

import (
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/sched"
)

// Work is synthetic guest work. Run is called on the vCPU thread whenever
// it may run ("enters guest mode") and must return promptly — within about
// a microsecond of computing — once g.Exit() is true. It keeps its own
// state between calls, so that work interrupted by a kick resumes.
type Work interface {
	Run(g *Guest)
}

// Guest is what Work sees of its vCPU thread.
type Guest struct{ v *VCPU }

// Exit reports whether the thread must leave guest mode (kick, park or
// stop pending). It is one atomic load.
func (g *Guest) Exit() bool { return atomic.LoadUint32(&g.v.ctl) != 0 }

// Now returns CLOCK_MONOTONIC nanoseconds.
func (g *Guest) Now() int64 { return sched.Nanotime() }

// SleepUntil blocks until CLOCK_MONOTONIC reaches t or a kick interrupts
// the sleep; it reports whether t was reached. It sleeps in a futex wait
// on the control word with an absolute timeout, so that a kick landing
// between the last Exit check and the sleep still ends it at once (the
// futex sees the word changed), as immediate_exit does for KVM_RUN; a kick
// during the sleep interrupts it with its signal.
func (g *Guest) SleepUntil(t int64) bool {
	for {
		c := atomic.LoadUint32(&g.v.ctl)
		if c != 0 {
			return false
		}
		switch err := futexWaitUntil(&g.v.ctl, c, t); err {
		case nil:
			return true
		case unix.EAGAIN, unix.EINTR:
			if sched.Nanotime() >= t {
				return true
			}
		default:
			return sched.Nanotime() >= t
		}
	}
}

// Spin is batch work: it computes in ~1µs chunks until told to exit,
// counting chunks done.
type Spin struct {
	// ItersPerUS is the spin loop's speed (see [Calibrate]); 0 means 100.
	ItersPerUS int
	chunks     atomic.Uint64
	x          uint64
}

// Run implements [Work].
func (s *Spin) Run(g *Guest) {
	n := s.ItersPerUS
	if n <= 0 {
		n = 100
	}
	for !g.Exit() {
		s.x = spin(n, s.x)
		s.chunks.Add(1)
	}
}

// Chunks returns the number of ~1µs chunks computed.
func (s *Spin) Chunks() uint64 { return s.chunks.Load() }
