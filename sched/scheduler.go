package sched

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/gomaxprocs"
	"github.com/colibrivm/colibri/internal/osthread"
	"github.com/colibrivm/colibri/internal/seccomp"
)

// homeUnknown is the home of a vCPU no policy has placed yet.
const homeUnknown = -2

// Mode is how the scheduler thread waits between passes.
type Mode uint8

const (
	// ModeBusyPoll spins on the thread's core until the next pass: the
	// lowest reaction time, at the cost of the whole core. The default.
	ModeBusyPoll Mode = iota
	// ModeSleep sleeps until the next pass (clock_nanosleep, 1ns timer
	// slack): the core is shared, each pass costs a timer wake-up.
	ModeSleep
	// ModeAdaptive busy-polls while some registered vCPU is active
	// (running, runnable, or it slept less than Config.IdleAfter ago) and
	// sleeps Config.IdlePeriod between passes once every vCPU has been
	// idle that long.
	ModeAdaptive
)

// String returns the mode's name as [ParseMode] reads it.
func (m Mode) String() string {
	switch m {
	case ModeBusyPoll:
		return "busy-poll"
	case ModeSleep:
		return "sleep"
	case ModeAdaptive:
		return "adaptive"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses "busy-poll", "sleep" or "adaptive".
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{ModeBusyPoll, ModeSleep, ModeAdaptive} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown scheduler mode %q (known: busy-poll, sleep, adaptive)", s)
}

// Defaults of [Config]'s timing fields.
const (
	DefaultPeriod     = 5 * time.Microsecond
	DefaultIdleAfter  = time.Millisecond
	DefaultIdlePeriod = 200 * time.Microsecond
)

// Config configures a [Scheduler]. The zero value of every field but Cores
// is a usable default, except SchedCPU, whose zero is CPU 0.
type Config struct {
	// Cores are the managed host CPUs the vCPUs run on. Required.
	Cores []int
	// SchedCPU is the CPU the scheduler thread pins itself to (it must
	// not be a managed core); -1 leaves it unpinned.
	SchedCPU int
	// FIFOPriority, if > 0, runs the scheduler thread SCHED_FIFO at this
	// priority (1–99; needs CAP_SYS_NICE). Only sensible with its own
	// core. Default 0: SCHED_OTHER.
	FIFOPriority int
	// Nice is the scheduler thread's nice value under SCHED_OTHER
	// (-20–19; below 0 needs CAP_SYS_NICE). Default 0.
	Nice int
	// Period is the time between the starts of two passes. Default
	// [DefaultPeriod] (5µs).
	Period time.Duration
	// Mode is how the thread waits between passes. Default
	// [ModeBusyPoll].
	Mode Mode
	// Sleep is the older spelling of Mode: ModeSleep; it may not be
	// combined with ModeAdaptive.
	Sleep bool
	// IdleAfter is how long every vCPU must have been idle before
	// ModeAdaptive sleeps. Default [DefaultIdleAfter] (1ms).
	IdleAfter time.Duration
	// IdlePeriod is ModeAdaptive's time between passes while idle.
	// Default [DefaultIdlePeriod] (200µs).
	IdlePeriod time.Duration
	// Observer reports the vCPU threads' run states; nil means none
	// (states are [Unknown]; only linux and pinned are then meaningful,
	// and ModeAdaptive never sleeps).
	Observer Observer
	// Clock is the time source; nil means [MonoClock].
	Clock Clock
	// Policy is the initial policy; nil means [Linux].
	Policy Policy
}

// Whatever the mode, a [Passive] policy (linux) and an empty set of vCPUs
// need no passes: the thread then blocks until Register, Unregister,
// SetPolicy or the end of Run, and costs no CPU.

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
	// about every 10ms while Run runs, when it blocks and when it
	// returns.
	CPUTime time.Duration
	// Blocks counts the times the thread blocked because no pass was
	// needed (a passive policy, or no vCPUs).
	Blocks uint64
	// PrioChanges counts the host scheduling class changes applied
	// ([OpPrio], and the resets to PrioNormal).
	PrioChanges uint64
}

type entry struct {
	v     VCPU
	slot  int
	group string // Grouper's name; "" for a group of its own
}

// Scheduler is the central scheduler. Register vCPUs, then call Run on a
// goroutine of its own; Register, Unregister, SetPolicy and Stats may be
// called from other goroutines at any time.
type Scheduler struct {
	cfg      Config
	clock    Clock
	coreSets [][]int

	// Owned by the scheduling thread.
	entries    []entry
	view       View
	policy     Policy
	actions    []Action
	prev       []int // new index → old index, for Updater
	started    bool  // the policy has been started
	lastActive int64 // ModeAdaptive: latest time a vCPU was seen active

	// Changes handed to the scheduling thread.
	mu            sync.Mutex
	dirty         atomic.Bool
	wake          chan struct{} // a change is pending (capacity 1)
	registered    []entry       // the registered set, as Register/Unregister left it
	setChanged    bool          // registered changed since the last pass
	policyChanged bool          // SetPolicy since the last pass
	nextPolicy    Policy
	gen           uint64        // changes made (under mu)
	applied       atomic.Uint64 // changes the scheduling thread has applied

	passes, parks, unparks, migrations, errs, blocks, prios atomic.Uint64
	passTime, cpuTime                                       atomic.Int64
	lastErr                                                 atomic.Pointer[error]
	running                                                 atomic.Bool
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
		cfg.Period = DefaultPeriod
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = DefaultIdleAfter
	}
	if cfg.IdlePeriod <= 0 {
		cfg.IdlePeriod = DefaultIdlePeriod
	}
	switch {
	case cfg.Mode > ModeAdaptive:
		return nil, fmt.Errorf("sched: unknown mode %d", cfg.Mode)
	case cfg.Sleep && cfg.Mode == ModeAdaptive:
		return nil, errors.New("sched: Sleep and ModeAdaptive both set")
	case cfg.Sleep:
		cfg.Mode = ModeSleep
	}
	cfg.Sleep = cfg.Mode == ModeSleep
	if cfg.FIFOPriority < 0 || cfg.FIFOPriority > 99 {
		return nil, fmt.Errorf("sched: SCHED_FIFO priority %d not in 1..99", cfg.FIFOPriority)
	}
	if cfg.Nice < -20 || cfg.Nice > 19 {
		return nil, fmt.Errorf("sched: nice %d not in -20..19", cfg.Nice)
	}
	s := &Scheduler{cfg: cfg, clock: cfg.Clock, wake: make(chan struct{}, 1)}
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

// Config returns the configuration with defaults filled in.
func (s *Scheduler) Config() Config { return s.cfg }

// changed marks a change for the scheduling thread and wakes it if it is
// blocked; s.mu is held. It returns the change's generation.
func (s *Scheduler) changed() uint64 {
	s.gen++
	s.dirty.Store(true)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return s.gen
}

// Register adds v to the scheduled vCPUs; it takes effect at the next pass.
// A policy that implements [Updater] places v without moving the vCPUs
// already placed.
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
	e := entry{v: v, slot: slot}
	if g, ok := v.(Grouper); ok {
		e.group = g.Group()
	}
	s.registered = append(s.registered[:len(s.registered):len(s.registered)], e)
	s.setChanged = true
	s.changed()
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
	gen := s.changed()
	s.mu.Unlock()
	// A pass under way may still act on v: wait until the scheduling
	// thread has applied this change (every later pass works on the new
	// set).
	if s.running.Load() {
		deadline := time.Now().Add(100 * time.Millisecond)
		for s.running.Load() && s.applied.Load() < gen && time.Now().Before(deadline) {
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

// SetPolicy switches to p at the next pass; p.Start is called then (also
// when p is the policy already running), and may re-place every vCPU.
func (s *Scheduler) SetPolicy(p Policy) {
	s.mu.Lock()
	s.nextPolicy = p
	s.policyChanged = true
	s.changed()
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
		Passes:      s.passes.Load(),
		Parks:       s.parks.Load(),
		Unparks:     s.unparks.Load(),
		Migrations:  s.migrations.Load(),
		Errors:      s.errs.Load(),
		PassTime:    time.Duration(s.passTime.Load()),
		CPUTime:     time.Duration(s.cpuTime.Load()),
		Blocks:      s.blocks.Load(),
		PrioChanges: s.prios.Load(),
	}
	if e := s.lastErr.Load(); e != nil {
		st.LastError = *e
	}
	return st
}

// applyChanges installs pending registrations and policy switches; it
// runs on the scheduling thread. A new policy (or the first) is started;
// a change of the vCPU set goes to the running policy's Update if it is an
// [Updater], else to its Start.
func (s *Scheduler) applyChanges() {
	s.mu.Lock()
	newPolicy := s.nextPolicy
	gen := s.gen
	var set []entry
	setChanged := s.setChanged
	if setChanged {
		set = append([]entry{}, s.registered...)
	}
	restart := s.policyChanged || !s.started
	s.setChanged, s.policyChanged = false, false
	s.dirty.Store(false)
	s.mu.Unlock()
	if setChanged {
		old := s.view.VCPUs
		oldEntries := s.entries
		s.entries = set
		s.view.VCPUs = make([]VCPUView, len(set))
		s.prev = make([]int, len(set))
		kept := make([]bool, len(oldEntries))
		for i, e := range set {
			s.view.VCPUs[i] = VCPUView{Class: e.v.Class(), Home: homeUnknown, Obs: ThreadState{CPU: -1}, Group: -1}
			s.prev[i] = -1
			for j, o := range oldEntries {
				if o.v == e.v {
					s.view.VCPUs[i] = old[j]
					s.prev[i] = j
					kept[j] = true
					break
				}
			}
		}
		s.assignGroups()
		// A vCPU that leaves gets its thread's default class back; its
		// thread may be gone already, so errors are not counted.
		for j, o := range oldEntries {
			if !kept[j] && (old[j].Prio != PrioNormal || old[j].Slice != 0) {
				if setPrio(o.v, PrioNormal, 0) == nil {
					s.prios.Add(1)
				}
			}
		}
	}
	s.policy = newPolicy
	s.view.Now = s.clock.Now()
	s.load()
	u, incremental := s.policy.(Updater)
	switch {
	case restart:
		// The previous policy's host classes do not outlive it: reset
		// them first, so that Start sees the threads as they are.
		s.actions = s.actions[:0]
		for i := range s.view.VCPUs {
			if vc := &s.view.VCPUs[i]; vc.Prio != PrioNormal || vc.Slice != 0 {
				s.actions = append(s.actions, Action{Op: OpPrio, VCPU: i, Prio: PrioNormal})
			}
		}
		s.apply()
		s.actions = s.policy.Start(&s.view, s.actions[:0])
	case setChanged && incremental:
		s.actions = u.Update(&s.view, s.prev, s.actions[:0])
	case setChanged:
		s.actions = s.policy.Start(&s.view, s.actions[:0])
	default:
		s.actions = s.actions[:0]
	}
	s.started = true
	s.apply()
	s.applied.Store(gen)
}

// assignGroups numbers the groups of the vCPUs in s.view: a vCPU keeps
// its number, a new one takes that of a vCPU of its group, or else the
// lowest number no group uses. It runs on the scheduling thread.
func (s *Scheduler) assignGroups() {
	used := map[int]bool{}
	byName := map[string]int{}
	for i, e := range s.entries {
		if g := s.view.VCPUs[i].Group; g >= 0 {
			used[g] = true
			if e.group != "" {
				byName[e.group] = g
			}
		}
	}
	next := 0
	for i, e := range s.entries {
		vc := &s.view.VCPUs[i]
		if vc.Group >= 0 {
			continue
		}
		if g, ok := byName[e.group]; ok && e.group != "" {
			vc.Group = g
			continue
		}
		for used[next] {
			next++
		}
		vc.Group = next
		used[next] = true
		if e.group != "" {
			byName[e.group] = next
		}
	}
	s.view.Groups = 0
	for i := range s.view.VCPUs {
		s.view.Groups = max(s.view.Groups, s.view.VCPUs[i].Group+1)
	}
}

// setPrio applies a host scheduling class to v: through its own
// SetHostPrio if it is a [PrioSetter], else by TID.
func setPrio(v VCPU, p HostPrio, slice time.Duration) error {
	if ps, ok := v.(PrioSetter); ok {
		return ps.SetHostPrio(p, slice)
	}
	return SetThreadPrio(v.TID(), p, slice)
}

// passive reports whether the scheduling thread needs no passes: no vCPUs,
// or a [Passive] policy.
func (s *Scheduler) passive() bool {
	if len(s.entries) == 0 {
		return true
	}
	p, ok := s.policy.(Passive)
	return ok && p.Passive()
}

// pace returns how long after this pass's start the next one starts and
// whether the thread sleeps (rather than spins) until then. In
// ModeAdaptive it sleeps IdlePeriod once no vCPU has been active for
// IdleAfter; a vCPU is active while running or runnable (or unobserved)
// and not parked, and a sleeping vCPU was active until it went to sleep.
func (s *Scheduler) pace(now int64) (wait time.Duration, sleep bool) {
	switch s.cfg.Mode {
	case ModeSleep:
		return s.cfg.Period, true
	case ModeAdaptive:
	default:
		return s.cfg.Period, false
	}
	for i := range s.view.VCPUs {
		vc := &s.view.VCPUs[i]
		switch {
		case vc.Parked:
		case vc.Obs.State == Sleeping:
			if vc.Obs.Since > s.lastActive {
				s.lastActive = vc.Obs.Since
			}
		default: // Running, Runnable, Unknown
			s.lastActive = now
		}
	}
	if now-s.lastActive < int64(s.cfg.IdleAfter) {
		return s.cfg.Period, false
	}
	return s.cfg.IdlePeriod, true
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
		case OpPrio:
			slice := a.Slice
			if a.Prio != PrioNormal || slice < 0 {
				slice = 0
			}
			if err = setPrio(v, a.Prio, slice); err == nil {
				vv.Prio, vv.Slice = a.Prio, slice
				s.prios.Add(1)
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
// goroutines. Run reserves one more GOMAXPROCS (internal/gomaxprocs) while
// it runs, since its thread holds a Go P while it polls. It returns an
// error only if the thread cannot be set up.
func (s *Scheduler) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("sched: Run called twice")
	}
	defer s.running.Store(false)
	defer gomaxprocs.Reserve(1)()
	errc := make(chan error, 1)
	osthread.Go(func() { errc <- s.loop(ctx) }) // the thread dies with the loop
	return <-errc
}

func (s *Scheduler) loop(ctx context.Context) error {
	osthread.SetName("vsched")
	if s.cfg.SchedCPU >= 0 {
		var set unix.CPUSet
		set.Set(s.cfg.SchedCPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("sched: pin scheduler thread to CPU %d: %w", s.cfg.SchedCPU, err)
		}
	}
	if s.cfg.Nice != 0 {
		if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), s.cfg.Nice); err != nil {
			return fmt.Errorf("sched: set the scheduler thread's nice to %d (below 0 needs CAP_SYS_NICE): %w", s.cfg.Nice, err)
		}
	}
	if s.cfg.FIFOPriority > 0 {
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(s.cfg.FIFOPriority)}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			return fmt.Errorf("sched: make scheduler thread SCHED_FIFO %d (needs CAP_SYS_NICE): %w", s.cfg.FIFOPriority, err)
		}
	}
	if s.cfg.Mode != ModeBusyPoll {
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	}
	if err := seccomp.Thread(seccomp.Scheduler); err != nil { // the scheduler's syscall filter
		return fmt.Errorf("sched: %w", err)
	}
	defer s.finish()
	done := ctx.Done()
	next := nanotime()
	lastCPU := next
	for {
		select {
		case <-done:
			return nil
		default:
		}
		if s.dirty.Load() {
			s.applyChanges()
		}
		if s.passive() {
			s.blocks.Add(1)
			s.updateCPUTime()
			select {
			case <-done:
				return nil
			case <-s.wake:
			}
			next = nanotime()
			continue
		}
		s.Pass()
		now := nanotime()
		if now-lastCPU > int64(10*time.Millisecond) {
			s.updateCPUTime()
			lastCPU = now
		}
		wait, sleep := s.pace(s.view.Now)
		next += int64(wait)
		if next < now {
			next = now
		}
		if sleep {
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

// finish unparks every parked vCPU, gives every vCPU its thread's default
// host class back and records the CPU time.
func (s *Scheduler) finish() {
	s.updateCPUTime()
	for i := range s.entries {
		if vc := &s.view.VCPUs[i]; vc.Prio != PrioNormal || vc.Slice != 0 {
			if err := setPrio(s.entries[i].v, PrioNormal, 0); err != nil {
				s.fail(fmt.Errorf("sched: reset host class of vCPU thread %d on exit: %w", s.entries[i].v.TID(), err))
			} else {
				vc.Prio, vc.Slice = PrioNormal, 0
				s.prios.Add(1)
			}
		}
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
