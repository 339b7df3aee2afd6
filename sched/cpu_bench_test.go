package sched

import (
	"context"
	"testing"
	"time"
)

// idleObserver reports every thread asleep since long ago: guests that
// are idle. Read-only while the scheduler runs.
type idleObserver struct{}

func (idleObserver) Watch(int) (int, error) { return 0, nil }
func (idleObserver) Unwatch(int) error      { return nil }
func (idleObserver) Load(_ int, st *ThreadState) {
	*st = ThreadState{State: Sleeping, CPU: 1, Since: 1}
}

// BenchmarkSchedulerThreadCPU runs the real scheduler thread (pinned to
// CPU 0, four idle vCPUs on CPU 1) for 2s per iteration under each policy
// and mode and reports the thread's CPU time as a share of one core:
// linux blocks (no passes), central and adaptive busy-poll, sleep every
// 5µs pass, or (mode adaptive, the vCPUs being idle) sleep 200µs between
// passes. Run with -benchtime 1x.
func BenchmarkSchedulerThreadCPU(b *testing.B) {
	cases := []struct {
		name   string
		policy func() Policy
		mode   Mode
	}{
		{"linux", func() Policy { return Linux{} }, ModeBusyPoll},
		{"central/busy-poll", func() Policy { return NewCentral(CentralConfig{}) }, ModeBusyPoll},
		{"central/sleep", func() Policy { return NewCentral(CentralConfig{}) }, ModeSleep},
		{"central/adaptive-idle", func() Policy { return NewCentral(CentralConfig{}) }, ModeAdaptive},
		{"adaptive/busy-poll", func() Policy { return NewAdaptive(AdaptiveConfig{}) }, ModeBusyPoll},
		{"adaptive/adaptive-idle", func() Policy { return NewAdaptive(AdaptiveConfig{}) }, ModeAdaptive},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var cpu, wall time.Duration
			var passes uint64
			for i := 0; i < b.N; i++ {
				s, err := New(Config{Cores: []int{1}, SchedCPU: 0, Mode: c.mode, Observer: idleObserver{}, Policy: c.policy()})
				if err != nil {
					b.Fatal(err)
				}
				for k := 0; k < 4; k++ {
					if err := s.Register(&nopVCPU{tid: 1000 + k, class: Class(k % 2)}); err != nil {
						b.Fatal(err)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				t0 := time.Now()
				if err := s.Run(ctx); err != nil {
					b.Fatal(err)
				}
				wall += time.Since(t0)
				cancel()
				st := s.Stats()
				cpu += st.CPUTime
				passes += st.Passes
			}
			b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "%core")
			b.ReportMetric(float64(cpu.Microseconds())/1e3/float64(b.N), "cpu-ms/2s")
			b.ReportMetric(float64(passes)/float64(b.N), "passes/2s")
		})
	}
}
