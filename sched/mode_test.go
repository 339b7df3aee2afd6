package sched

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// countVCPU counts the scheduler's calls; safe for use from Run's thread.
type countVCPU struct {
	tid   int
	class Class
	calls atomic.Int64
}

func (v *countVCPU) TID() int                { return v.tid }
func (v *countVCPU) Class() Class            { return v.class }
func (v *countVCPU) Kick() error             { v.calls.Add(1); return nil }
func (v *countVCPU) Park() error             { v.calls.Add(1); return nil }
func (v *countVCPU) Unpark() error           { v.calls.Add(1); return nil }
func (v *countVCPU) SetAffinity([]int) error { v.calls.Add(1); return nil }
func (v *countVCPU) SetHostPrio(HostPrio, time.Duration) error {
	v.calls.Add(1)
	return nil
}

// waitStats polls the scheduler's stats until ok or a second passes.
func waitStats(t *testing.T, s *Scheduler, what string, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		st := s.Stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: stats %+v", what, st)
		}
		time.Sleep(time.Millisecond)
	}
}

// With a passive policy, or no vCPUs, the thread makes no passes and
// wakes for each change.
func TestPassiveBlocks(t *testing.T) {
	s, err := New(Config{Cores: []int{0}, SchedCPU: -1, Policy: Linux{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitStats(t, s, "blocked with no vCPUs", func(st Stats) bool { return st.Blocks >= 1 })
	v := &countVCPU{tid: 1, class: Batch}
	if err := s.Register(v); err != nil {
		t.Fatal(err)
	}
	// Linux floats the new vCPU (one call) without any pass.
	for i := 0; v.calls.Load() == 0 && i < 1000; i++ {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	st := s.Stats()
	if v.calls.Load() != 1 || st.Passes != 0 || st.Blocks < 2 {
		t.Fatalf("linux with a vCPU: %d calls, stats %+v: want 1 call, no passes, ≥2 blocks", v.calls.Load(), st)
	}
	// An active policy makes passes; switching back stops them.
	s.SetPolicy(Pinned{})
	waitStats(t, s, "passes under pinned", func(st Stats) bool { return st.Passes > 100 })
	s.SetPolicy(Linux{})
	st = waitStats(t, s, "blocked again under linux", func(st2 Stats) bool { return st2.Blocks > st.Blocks })
	time.Sleep(20 * time.Millisecond)
	if st2 := s.Stats(); st2.Passes != st.Passes {
		t.Fatalf("passes went on under linux: %d → %d", st.Passes, st2.Passes)
	}
	// Unregister waits for the blocked thread to apply it.
	t0 := time.Now()
	if err := s.Unregister(v); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 50*time.Millisecond {
		t.Fatalf("Unregister took %v: it waited for its deadline, not for the blocked thread", d)
	}
	if s.applied.Load() != s.gen {
		t.Fatalf("Unregister returned before the change was applied (%d of %d)", s.applied.Load(), s.gen)
	}
}

// ModeAdaptive polls while a vCPU is active and sleeps once all have been
// idle for IdleAfter (simulated clock, pacing only).
func TestAdaptivePace(t *testing.T) {
	r := &rig{t: t, clock: &simClock{now: 1e9}, obs: &simObserver{}}
	s, err := New(Config{Cores: []int{0, 1}, SchedCPU: -1, Observer: r.obs, Clock: r.clock,
		Policy: NewCentral(CentralConfig{}), Mode: ModeAdaptive, IdleAfter: time.Millisecond, IdlePeriod: 100 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	r.vm(100, LatencyCritical, Batch)
	expect := func(us float64, wantSleep bool) {
		t.Helper()
		r.clock.now = 1e9 + int64(us*1e3)
		r.pass()
		wait, sleep := s.pace(s.view.Now)
		switch {
		case sleep != wantSleep:
			t.Fatalf("at %vµs: sleep = %v, want %v", us, sleep, wantSleep)
		case sleep && wait != 100*time.Microsecond, !sleep && wait != DefaultPeriod:
			t.Fatalf("at %vµs: wait %v (sleep %v)", us, wait, sleep)
		}
	}
	r.clock.now = 1e9
	r.set(0, Sleeping, 0)
	r.set(1, Running, 1)
	expect(0, false)    // the batch vCPU runs
	expect(5000, false) // and runs
	r.clock.now = 1e9 + 6000e3
	r.set(1, Sleeping, 1) // now both sleep
	expect(6500, false)   // idle for 500µs only
	expect(7001, true)    // idle for 1ms
	expect(9000, true)
	r.clock.now = 1e9 + 9050e3
	r.set(0, Runnable, 0) // the LC vCPU wakes
	expect(9100, false)
	r.clock.now = 1e9 + 9120e3
	r.set(0, Sleeping, 0)
	expect(9500, false) // it slept 380µs ago
	expect(10200, true)
	// A vCPU that woke and slept again between two passes counts too.
	r.clock.now = 1e9 + 10300e3
	r.set(1, Sleeping, 1)
	expect(10400, false)
	// Parked vCPUs are not activity: park the batch vCPU as central does
	// when it is preempted, and keep it "runnable".
	s.view.VCPUs[1].Parked = true
	r.clock.now = 1e9 + 12000e3
	r.set(1, Runnable, 1)
	expect(12000, true)
}

func TestParseMode(t *testing.T) {
	for _, m := range []Mode{ModeBusyPoll, ModeSleep, ModeAdaptive} {
		if got, err := ParseMode(m.String()); err != nil || got != m {
			t.Fatalf("ParseMode(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseMode("spin"); err == nil {
		t.Fatal("unknown mode accepted")
	}
	if _, err := New(Config{Cores: []int{1}, Sleep: true, Mode: ModeAdaptive}); err == nil {
		t.Fatal("Sleep with ModeAdaptive accepted")
	}
	s, err := New(Config{Cores: []int{1}, Sleep: true})
	if err != nil || s.Config().Mode != ModeSleep || s.Config().Period != DefaultPeriod || s.Config().IdleAfter != DefaultIdleAfter {
		t.Fatalf("New with Sleep: %v, config %+v", err, s.Config())
	}
}
