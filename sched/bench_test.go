package sched

import (
	"fmt"
	"testing"
	"time"
)

// nopVCPU does nothing; it isolates the scheduler's own cost.
type nopVCPU struct {
	tid   int
	class Class
}

func (v *nopVCPU) TID() int                { return v.tid }
func (v *nopVCPU) Class() Class            { return v.class }
func (v *nopVCPU) Kick() error             { return nil }
func (v *nopVCPU) Park() error             { return nil }
func (v *nopVCPU) Unpark() error           { return nil }
func (v *nopVCPU) SetAffinity([]int) error { return nil }
func (v *nopVCPU) SetHostPrio(HostPrio, time.Duration) error {
	return nil
}

// BenchmarkPass measures one scheduling pass of each policy over n vCPUs
// (half latency-critical, half batch, on 8 cores) whose observed states
// change every pass, and reports the cost per vCPU.
func BenchmarkPass(b *testing.B) {
	for _, policy := range PolicyNames() {
		for _, n := range []int{16, 256} {
			b.Run(fmt.Sprintf("%s/vcpus=%d", policy, n), func(b *testing.B) {
				p, err := NewPolicy(policy, PolicyConfig{})
				if err != nil {
					b.Fatal(err)
				}
				clock := &simClock{now: 1e9}
				obs := &simObserver{}
				s, err := New(Config{Cores: []int{0, 1, 2, 3, 4, 5, 6, 7}, SchedCPU: -1, Observer: obs, Clock: clock, Policy: p})
				if err != nil {
					b.Fatal(err)
				}
				for i := 0; i < n; i++ {
					c := Batch
					if i%2 == 0 {
						c = LatencyCritical
					}
					if err := s.Register(&nopVCPU{tid: i, class: c}); err != nil {
						b.Fatal(err)
					}
				}
				s.Pass()
				states := [...]RunState{Sleeping, Runnable, Running}
				b.ReportAllocs()
				b.ResetTimer()
				for k := 0; k < b.N; k++ {
					clock.now += 5000
					// Every pass, one vCPU in 8 changes state.
					for i := k % 8; i < n; i += 8 {
						obs.st[i] = ThreadState{State: states[(k+i)%3], CPU: i % 8, Since: clock.now - 30000}
					}
					s.Pass()
				}
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/vcpu")
			})
		}
	}
}
