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
// the sleep; it reports whether t was reached.
func (g *Guest) SleepUntil(t int64) bool {
	ts := unix.NsecToTimespec(t)
	for !g.Exit() {
		err := unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil)
		if err == nil {
			return true
		}
		if err != unix.EINTR {
			return sched.Nanotime() >= t
		}
	}
	return false
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
