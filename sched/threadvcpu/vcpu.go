package threadvcpu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/gomaxprocs"
	"github.com/colibrivm/colibri/internal/osthread"
	"github.com/colibrivm/colibri/sched"
)

// Control word bits.
const (
	ctlPark uint32 = 1 << iota // park requested
	ctlKick                    // leave guest mode once
	ctlStop                    // exit the thread
)

// DefaultKickSignal is the real-time signal kicks use: SIGRTMIN+6 in the
// kernel's numbering, clear of the 32–34 Go reserves. Go ignores it, since
// nothing calls signal.Notify for it; its only effect is to interrupt the
// thread's system call (EINTR), as it interrupts KVM_RUN.
const DefaultKickSignal = unix.Signal(40)

// Config configures a thread vCPU.
type Config struct {
	// Class is the vCPU's scheduling class.
	Class sched.Class
	// Work is the guest work; required.
	Work Work
	// KickSignal is the real-time signal sent by kicks; ≥ 35. Default
	// DefaultKickSignal.
	KickSignal unix.Signal
	// CPUs is the initial affinity; empty leaves it inherited.
	CPUs []int
	// Group names the vCPU's VM ([sched.Grouper]); empty: a VM of its
	// own.
	Group string
}

// Stats count what happened to a thread vCPU.
type Stats struct {
	// Exits counts returns from guest mode (kicks, parks, stop).
	Exits uint64
	// Parks counts times the thread blocked parked; Parked is the total
	// time it spent so.
	Parks  uint64
	Parked time.Duration
}

// VCPU is a thread vCPU; it implements [sched.VCPU].
type VCPU struct {
	cfg Config
	pid int
	tid int

	ctl      uint32 // control word; futex address; atomic access only
	sleeping atomic.Uint32
	parkedAt atomic.Int64 // CLOCK_MONOTONIC ns the thread last blocked parked, 0 when not parked
	resumed  atomic.Int64 // CLOCK_MONOTONIC ns the thread last left park

	exits, parks atomic.Uint64
	parkedNS     atomic.Int64

	done chan struct{}
	err  error
	stop sync.Once
}

var (
	_ sched.VCPU    = (*VCPU)(nil)
	_ sched.Grouper = (*VCPU)(nil)
)

// Start starts a thread vCPU; it runs until ctx is done or Stop. It
// returns once the thread exists and has its initial affinity.
//
// A thread vCPU computing in guest mode holds a Go P (and needs one to
// return from a system call), so Start reserves one more GOMAXPROCS
// (internal/gomaxprocs) for the thread's life: otherwise more thread vCPUs
// than GOMAXPROCS would be time-sliced by the Go scheduler instead of the
// host's.
func Start(ctx context.Context, cfg Config) (*VCPU, error) {
	if cfg.Work == nil {
		return nil, errors.New("threadvcpu: no work")
	}
	if cfg.KickSignal == 0 {
		cfg.KickSignal = DefaultKickSignal
	}
	if cfg.KickSignal < 35 || cfg.KickSignal > 64 {
		return nil, fmt.Errorf("threadvcpu: kick signal %d is not a real-time signal ≥ 35", cfg.KickSignal)
	}
	v := &VCPU{cfg: cfg, pid: os.Getpid(), done: make(chan struct{})}
	ready := make(chan error, 1)
	release := gomaxprocs.Reserve(1)
	osthread.Go(func() { v.thread(ready, release) })
	if err := <-ready; err != nil {
		<-v.done
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			v.Stop()
		case <-v.done:
		}
	}()
	return v, nil
}

// thread is the vCPU thread's whole life.
func (v *VCPU) thread(ready chan<- error, release func()) {
	defer close(v.done)
	defer release()
	v.tid = unix.Gettid()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	if len(v.cfg.CPUs) > 0 {
		if err := v.SetAffinity(v.cfg.CPUs); err != nil {
			ready <- err
			return
		}
	}
	ready <- nil
	g := &Guest{v: v}
	for {
		c := atomic.LoadUint32(&v.ctl)
		if c&ctlStop != 0 {
			return
		}
		if c&ctlPark != 0 {
			if err := v.park(); err != nil {
				v.err = fmt.Errorf("threadvcpu: park thread %d: %w", v.tid, err)
				return
			}
			continue
		}
		if c&ctlKick != 0 {
			atomic.AndUint32(&v.ctl, ^ctlKick)
		}
		v.cfg.Work.Run(g)
		v.exits.Add(1)
	}
}

// park blocks while a park is requested.
func (v *VCPU) park() error {
	t0 := sched.Nanotime()
	v.parkedAt.Store(t0)
	v.parks.Add(1)
	for {
		v.sleeping.Store(1)
		c := atomic.LoadUint32(&v.ctl)
		if c&ctlPark == 0 || c&ctlStop != 0 {
			break
		}
		if err := futexWait(&v.ctl, c); err != nil {
			v.sleeping.Store(0)
			return err
		}
	}
	v.sleeping.Store(0)
	t1 := sched.Nanotime()
	v.parkedAt.Store(0)
	v.resumed.Store(t1)
	v.parkedNS.Add(t1 - t0)
	return nil
}

// TID implements [sched.VCPU].
func (v *VCPU) TID() int { return v.tid }

// Class implements [sched.VCPU].
func (v *VCPU) Class() sched.Class { return v.cfg.Class }

// Group implements [sched.Grouper].
func (v *VCPU) Group() string { return v.cfg.Group }

func (v *VCPU) signal() error {
	if err := unix.Tgkill(v.pid, v.tid, v.cfg.KickSignal); err != nil {
		if err == unix.ESRCH {
			return errStopped
		}
		return fmt.Errorf("threadvcpu: tgkill thread %d: %w", v.tid, err)
	}
	return nil
}

// Kick implements [sched.VCPU]: set the kick flag, then signal the thread.
func (v *VCPU) Kick() error {
	atomic.OrUint32(&v.ctl, ctlKick)
	return v.signal()
}

// Park implements [sched.VCPU]: set the park flag, then signal the thread;
// it blocks at its next exit from guest mode.
func (v *VCPU) Park() error {
	if atomic.OrUint32(&v.ctl, ctlPark)&ctlPark != 0 {
		return nil
	}
	return v.signal()
}

// Unpark implements [sched.VCPU]: clear the park flag and wake the thread
// if it is blocked.
func (v *VCPU) Unpark() error {
	if atomic.AndUint32(&v.ctl, ^ctlPark)&ctlPark == 0 {
		return nil
	}
	if v.sleeping.Load() != 0 {
		if err := futexWake(&v.ctl, 1); err != nil {
			return fmt.Errorf("threadvcpu: wake thread %d: %w", v.tid, err)
		}
	}
	return nil
}

// SetAffinity implements [sched.VCPU].
func (v *VCPU) SetAffinity(cpus []int) error {
	if len(cpus) == 0 {
		return errors.New("threadvcpu: empty CPU set")
	}
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	if err := unix.SchedSetaffinity(v.tid, &set); err != nil {
		return fmt.Errorf("threadvcpu: set affinity of thread %d to %v: %w", v.tid, cpus, err)
	}
	return nil
}

// ParkedSince returns when the thread last blocked parked (CLOCK_MONOTONIC
// ns), or 0 if it is not parked now.
func (v *VCPU) ParkedSince() int64 { return v.parkedAt.Load() }

// ResumedAt returns when the thread last left park (CLOCK_MONOTONIC ns).
func (v *VCPU) ResumedAt() int64 { return v.resumed.Load() }

// Stats returns the thread's counters.
func (v *VCPU) Stats() Stats {
	return Stats{Exits: v.exits.Load(), Parks: v.parks.Load(), Parked: time.Duration(v.parkedNS.Load())}
}

// Stop makes the thread exit and waits for it. It returns the error that
// ended the thread early, if any.
func (v *VCPU) Stop() error {
	v.stop.Do(func() {
		atomic.OrUint32(&v.ctl, ctlStop)
		_ = futexWake(&v.ctl, 1)
		_ = v.signal()
	})
	<-v.done
	return v.err
}

// Done is closed when the thread has exited.
func (v *VCPU) Done() <-chan struct{} { return v.done }
