package threadvcpu

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/colibrivm/colibri/sched"
)

// The real scheduler loop time-slices two batch thread vCPUs on one core.
func TestSchedulerTimeSlicesThreadVCPUs(t *testing.T) {
	a, wa := startSpin(t)
	b, wb := startSpin(t)
	s, err := sched.New(sched.Config{
		Cores: []int{1}, SchedCPU: 0, Sleep: true, Period: 50 * time.Microsecond,
		Policy: sched.NewCentral(sched.CentralConfig{Quantum: 2 * time.Millisecond}),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*VCPU{a, b} {
		if err := s.Register(v); err != nil {
			t.Fatal(err)
		}
	}
	ca, cb := wa.Chunks(), wb.Chunks()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Errors != 0 {
		t.Fatalf("scheduler errors: %v", st.LastError)
	}
	// ~150 slices of 2ms in 300ms; allow a slow, shared machine.
	if st.Parks < 10 || st.Passes < 300 {
		t.Fatalf("stats %+v: want ≥10 parks in ≥100 passes", st)
	}
	// Both ran during the run, and the threads really parked. (Which one
	// parked how often depends on when the host let them run: this
	// machine may be shared with busy neighbours.)
	if wa.Chunks() == ca || wb.Chunks() == cb {
		t.Fatalf("chunks %d→%d, %d→%d: both vCPUs must have run", ca, wa.Chunks(), cb, wb.Chunks())
	}
	if a.Stats().Parks+b.Stats().Parks == 0 {
		_, sa := lastCPU(t, a.TID())
		_, sb := lastCPU(t, b.TID())
		t.Fatalf("parks %d/%d: no vCPU thread ever parked (chunks %d→%d, %d→%d; states %s %s; GOMAXPROCS %d; sched %+v)",
			a.Stats().Parks, b.Stats().Parks, ca, wa.Chunks(), cb, wb.Chunks(), sa, sb, runtime.GOMAXPROCS(0), st)
	}
	// Run unparked everything on exit.
	waitFor(t, "both run after Run returns", func() bool { return a.ParkedSince() == 0 && b.ParkedSince() == 0 })
	if cpu, _ := lastCPU(t, a.TID()); cpu != 1 {
		t.Fatalf("vCPU on CPU %d, want managed core 1", cpu)
	}
	if st.CPUTime <= 0 {
		t.Fatal("no scheduler CPU time recorded")
	}
}

// A vCPU unregistered while the scheduler runs is unparked and left alone.
func TestUnregisterWhileRunning(t *testing.T) {
	a, _ := startSpin(t)
	b, wb := startSpin(t)
	s, err := sched.New(sched.Config{
		Cores: []int{1}, SchedCPU: 0, Sleep: true, Period: 20 * time.Microsecond,
		Policy: sched.NewCentral(sched.CentralConfig{Quantum: time.Millisecond}),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*VCPU{a, b} {
		if err := s.Register(v); err != nil {
			t.Fatal(err)
		}
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
	time.Sleep(20 * time.Millisecond)
	if err := s.Unregister(b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the unregistered vCPU runs", func() bool { return b.ParkedSince() == 0 })
	parks := b.Stats().Parks
	n := wb.Chunks()
	time.Sleep(30 * time.Millisecond) // 30 quanta
	if b.Stats().Parks != parks {
		t.Fatalf("unregistered vCPU parked %d more times", b.Stats().Parks-parks)
	}
	if wb.Chunks() == n {
		t.Fatal("unregistered vCPU did not run")
	}
}
