package threadvcpu

import (
	"context"
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
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Errors != 0 {
		t.Fatalf("scheduler errors: %v", st.LastError)
	}
	// ~50 slices of 2ms in 100ms; allow a slow, shared machine.
	if st.Parks < 10 || st.Passes < 100 {
		t.Fatalf("stats %+v: want ≥10 parks in ≥100 passes", st)
	}
	if wa.Chunks() == 0 || wb.Chunks() == 0 {
		t.Fatalf("chunks %d/%d: both vCPUs must have run", wa.Chunks(), wb.Chunks())
	}
	if a.Stats().Parks == 0 || b.Stats().Parks == 0 {
		t.Fatalf("parks %d/%d: both vCPUs must have been parked", a.Stats().Parks, b.Stats().Parks)
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
