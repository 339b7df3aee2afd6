package sched

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// homeUnknown is the home of a vCPU no policy has placed yet.
const homeUnknown = -2

// Config configures a [Scheduler].
type Config struct {
	// Cores are the managed host CPUs the vCPUs run on. Required.
	Cores []int
	// SchedCPU is the CPU the scheduler thread pins itself to; -1 leaves
	// it unpinned.
	SchedCPU int
	// FIFOPriority, if > 0, runs the scheduler thread SCHED_FIFO at this
	// priority (1–99; needs CAP_SYS_NICE). Only sensible with its own
	// core.
	FIFOPriority int
	// Period is the time between the starts of two passes. Default 5µs.
	Period time.Duration
	// Sleep makes the thread sleep between passes (clock_nanosleep with
	// 1ns timer slack) instead of busy-polling its core.
	Sleep bool
	// Observer reports the vCPU threads' run states; nil means none
	// (states are [Unknown]; only linux and pinned are then meaningful).
	Observer Observer
	// Clock is the time source; nil means [MonoClock].
	Clock Clock
	// Policy is the initial policy; nil means [Linux].
	Policy Policy
}

// Stats are the scheduler's counters since New.
type Stats struct {
	// Passes is the number of scheduling passes.
	Passes uint64
	// Parks and Unparks count the park and unpark actions applied.
	Parks, Unparks uint64
	// Migrations counts pins and floats that moved an already placed
	// vCPU.
	Migrations uint64
	// Errors counts actions that failed; LastError is the latest.
	Errors    uint64
	LastError error
	// PassTime is the total time spent in passes (excluding waits).
	PassTime time.Duration
	// CPUTime is the scheduler thread's CPU time (user+system), updated
	// about every 10ms while Run runs and when it returns.
	CPUTime time.Duration
}

type entry struct {
	v    VCPU
	slot int
}

// Scheduler is the central scheduler. Register vCPUs, then call Run on a
// goroutine of its own; Register, Unregister, SetPolicy and Stats may be
// called from other goroutines at any time.
type Scheduler struct {
	cfg      Config
	clock    Clock
	coreSets [][]int

	// Owned by the scheduling thread.
	entries []entry
	view    View
	policy  Policy
	actions []Action

	// Changes handed to the scheduling thread.
	mu         sync.Mutex
	dirty      atomic.Bool
	registered []entry // the registered set, as Register/Unregister left it
	setChanged bool    // registered changed since the last pass
	nextPolicy Policy

	passes, parks, unparks, migrations, errs atomic.Uint64
	passTime, cpuTime                        atomic.Int64
	lastErr                                  atomic.Pointer[error]
	running                                  atomic.Bool
}

// New returns a scheduler for cfg.
func New(cfg Config) (*Scheduler, error) {
	if len(cfg.Cores) == 0 {
		return nil, errors.New("sched: no managed cores")
	}
	for _, c := range cfg.Cores {
		if c < 0 || c >= 1024 {
			return nil, fmt.Errorf("sched: managed core %d out of range", c)
		}
		if c == cfg.SchedCPU {
			return nil, fmt.Errorf("sched: core %d is both managed and the scheduler's", c)
		}
	}
	if cfg.Period <= 0 {
		cfg.Period = 5 * time.Microsecond
	}
	if cfg.FIFOPriority < 0 || cfg.FIFOPriority > 99 {
		return nil, fmt.Errorf("sched: SCHED_FIFO priority %d not in 1..99", cfg.FIFOPriority)
	}
	s := &Scheduler{cfg: cfg, clock: cfg.Clock}
	if s.clock == nil {
		s.clock = MonoClock{}
	}
	s.view.Cores = append([]int(nil), cfg.Cores...)
	for _, c := range cfg.Cores {
		s.coreSets = append(s.coreSets, []int{c})
	}
	s.policy = cfg.Policy
	if s.policy == nil {
		s.policy = Linux{}
	}
	s.nextPolicy = s.policy
	s.dirty.Store(true)
	return s, nil
}

// Register adds v to the scheduled vCPUs; it takes effect at the next pass.
func (s *Scheduler) Register(v VCPU) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.registered {
		if e.v == v {
			return fmt.Errorf("sched: vCPU thread %d registered twice", v.TID())
		}
	}
	slot := -1
	if s.cfg.Observer != nil {
		var err error
		if slot, err = s.cfg.Observer.Watch(v.TID()); err != nil {
			return fmt.Errorf("sched: watch vCPU thread %d: %w", v.TID(), err)
		}
	}
	s.registered = append(s.registered[:len(s.registered):len(s.registered)], entry{v: v, slot: slot})
	s.setChanged = true
	s.dirty.Store(true)
	return nil
}

// Unregister removes v from the scheduled vCPUs and unparks it, so that
// no vCPU is left parked by the scheduler. While Run runs, it first waits
// (up to 100ms) for the scheduling thread to drop v, so that no pass acts
// on v after Unregister returns.
func (s *Scheduler) Unregister(v VCPU) error {
	s.mu.Lock()
	cur := s.registered
	idx := -1
	for i, e := range cur {
		if e.v == v {
			idx = i
		}
	}
	if idx < 0 {
		s.mu.Unlock()
		return fmt.Errorf("sched: vCPU thread %d is not registered", v.TID())
	}
	slot := cur[idx].slot
	s.registered = append(cur[:idx:idx], cur[idx+1:]...)
	s.setChanged = true
	s.dirty.Store(true)
	s.mu.Unlock()
	// A pass under way may still act on v: wait until one has started
	// after the change (it applies the change first) and finished.
	if s.running.Load() {
		target := s.passes.Load() + 2
		deadline := time.Now().Add(100 * time.Millisecond)
		for s.running.Load() && s.passes.Load() < target && time.Now().Before(deadline) {
			time.Sleep(10 * time.Microsecond)
		}
	}
	var errs []error
	if s.cfg.Observer != nil && slot >= 0 {
		if err := s.cfg.Observer.Unwatch(slot); err != nil {
			errs = append(errs, fmt.Errorf("sched: unwatch vCPU thread %d: %w", v.TID(), err))
		}
	}
	if err := v.Unpark(); err != nil {
		errs = append(errs, fmt.Errorf("sched: unpark unregistered vCPU thread %d: %w", v.TID(), err))
	}
	return errors.Join(errs...)
}

// SetPolicy switches to p at the next pass; p.Start is called then.
func (s *Scheduler) SetPolicy(p Policy) {
	s.mu.Lock()
	s.nextPolicy = p
	s.dirty.Store(true)
	s.mu.Unlock()
}

// Policy returns the policy that will run the next pass.
func (s *Scheduler) Policy() Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextPolicy
}

// Stats returns the counters.
func (s *Scheduler) Stats() Stats {
	st := Stats{
		Passes:     s.passes.Load(),
		Parks:      s.parks.Load(),
		Unparks:    s.unparks.Load(),
		Migrations: s.migrations.Load(),
		Errors:     s.errs.Load(),
		PassTime:   time.Duration(s.passTime.Load()),
		CPUTime:    time.Duration(s.cpuTime.Load()),
	}
	if e := s.lastErr.Load(); e != nil {
		st.LastError = *e
	}
	return st
}

// applyChanges installs pending registrations and policy switches; it
// runs on the scheduling thread.
func (s *Scheduler) applyChanges() {
	s.mu.Lock()
	newPolicy := s.nextPolicy
	var set []entry
	if s.setChanged {
		set = append([]entry{}, s.registered...)
		s.setChanged = false
	}
	s.dirty.Store(false)
	s.mu.Unlock()
	if set != nil || s.entries == nil {
		old := s.view.VCPUs
		oldEntries := s.entries
		s.entries = set
		s.view.VCPUs = make([]VCPUView, len(set))
		for i, e := range set {
			s.view.VCPUs[i] = VCPUView{Class: e.v.Class(), Home: homeUnknown, Obs: ThreadState{CPU: -1}}
			for j, o := range oldEntries {
				if o.v == e.v {
					s.view.VCPUs[i] = old[j]
				}
			}
		}
	}
	s.policy = newPolicy
	s.view.Now = s.clock.Now()
	s.load()
	s.actions = s.policy.Start(&s.view, s.actions[:0])
	s.apply()
}

// Pass runs one scheduling pass: it reads every vCPU's state, asks the
// policy and applies its actions. Run calls it in a loop; tests and
// benchmarks may call it directly, never concurrently with Run.
func (s *Scheduler) Pass() {
	if s.dirty.Load() {
		s.applyChanges()
	}
	t0 := s.clock.Now()
	s.view.Now = t0
	s.load()
	s.actions = s.policy.Decide(&s.view, s.actions[:0])
	s.apply()
	s.passes.Add(1)
	s.passTime.Add(s.clock.Now() - t0)
}

func (s *Scheduler) load() {
	obs := s.cfg.Observer
	if obs == nil {
		return
	}
	for i := range s.entries {
		obs.Load(s.entries[i].slot, &s.view.VCPUs[i].Obs)
	}
}

func (s *Scheduler) apply() {
	for _, a := range s.actions {
		if a.VCPU < 0 || a.VCPU >= len(s.entries) {
			s.fail(fmt.Errorf("sched: policy %s acted on vCPU %d of %d", s.policy.Name(), a.VCPU, len(s.entries)))
			continue
		}
		v := s.entries[a.VCPU].v
		vv := &s.view.VCPUs[a.VCPU]
		var err error
		switch a.Op {
		case OpPark:
			if err = v.Park(); err == nil {
				vv.Parked, vv.ParkedAt = true, s.view.Now
				s.parks.Add(1)
			}
		case OpUnpark:
			if err = v.Unpark(); err == nil {
				vv.Parked, vv.ParkedAt = false, s.view.Now
				s.unparks.Add(1)
			}
		case OpPin:
			if a.Core < 0 || a.Core >= len(s.coreSets) {
				err = fmt.Errorf("core index %d of %d", a.Core, len(s.coreSets))
				break
			}
			if err = v.SetAffinity(s.coreSets[a.Core]); err == nil {
				if vv.Home != homeUnknown && vv.Home != a.Core {
					s.migrations.Add(1)
				}
				vv.Home = a.Core
			}
		case OpFloat:
			if err = v.SetAffinity(s.view.Cores); err == nil {
				if vv.Home != homeUnknown && vv.Home != Floating {
					s.migrations.Add(1)
				}
				vv.Home = Floating
			}
		default:
			err = fmt.Errorf("unknown op %d", a.Op)
		}
		if err != nil {
			s.fail(fmt.Errorf("sched: %s %s on vCPU thread %d: %w", s.policy.Name(), a, v.TID(), err))
		}
	}
}

func (s *Scheduler) fail(err error) {
	s.errs.Add(1)
	s.lastErr.Store(&err)
}

// Run runs the scheduling loop on a locked OS thread until ctx is done,
// then unparks every vCPU it parked. The thread is pinned to
// Config.SchedCPU and made SCHED_FIFO if configured; it is never unlocked,
// so it exits with the goroutine and its settings never leak to other
// goroutines. Run raises GOMAXPROCS by one while it runs, since its
// thread holds a Go P throughout. It returns an error only if the thread
// cannot be set up.
func (s *Scheduler) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("sched: Run called twice")
	}
	defer s.running.Store(false)
	// The busy-polling thread holds a Go P for its whole life: add one.
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	defer func() { runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) - 1) }()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		errc <- s.loop(ctx)
	}()
	return <-errc
}

func (s *Scheduler) loop(ctx context.Context) error {
	if s.cfg.SchedCPU >= 0 {
		var set unix.CPUSet
		set.Set(s.cfg.SchedCPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("sched: pin scheduler thread to CPU %d: %w", s.cfg.SchedCPU, err)
		}
	}
	if s.cfg.FIFOPriority > 0 {
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(s.cfg.FIFOPriority)}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			return fmt.Errorf("sched: make scheduler thread SCHED_FIFO %d (needs CAP_SYS_NICE): %w", s.cfg.FIFOPriority, err)
		}
	}
	if s.cfg.Sleep {
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	}
	defer s.finish()
	done := ctx.Done()
	period := int64(s.cfg.Period)
	next := nanotime()
	lastCPU := next
	for {
		select {
		case <-done:
			return nil
		default:
		}
		s.Pass()
		now := nanotime()
		if now-lastCPU > int64(10*time.Millisecond) {
			s.updateCPUTime()
			lastCPU = now
		}
		next += period
		if next < now {
			next = now
		}
		if s.cfg.Sleep {
			ts := unix.NsecToTimespec(next)
			_ = unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil)
			continue
		}
		for nanotime() < next {
		}
	}
}

func (s *Scheduler) updateCPUTime() {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) == nil {
		s.cpuTime.Store(ru.Utime.Nano() + ru.Stime.Nano())
	}
}

// finish unparks every parked vCPU and records the CPU time.
func (s *Scheduler) finish() {
	s.updateCPUTime()
	for i := range s.entries {
		if s.view.VCPUs[i].Parked {
			if err := s.entries[i].v.Unpark(); err != nil {
				s.fail(fmt.Errorf("sched: unpark vCPU thread %d on exit: %w", s.entries[i].v.TID(), err))
				continue
			}
			s.view.VCPUs[i].Parked = false
			s.unparks.Add(1)
		}
	}
}
