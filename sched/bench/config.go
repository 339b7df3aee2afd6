// Package bench is the scheduler experiment behind `colibri sched bench`:
// latency-critical thread vCPUs serve open-loop Poisson request streams
// while batch thread vCPUs spin on the same managed cores, under each
// scheduling policy in turn, and the request latency, throughput,
// preemptions, migrations, scheduler CPU time and runqueue latency are
// reported side by side with an isolated run (no batch vCPUs).
package bench

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/colibrivm/colibri/sched"
	"github.com/colibrivm/colibri/sched/threadvcpu"
)

// Config describes one experiment.
type Config struct {
	// Policies to run, in order; "all" expands to linux, pinned, central.
	Policies []string
	// LC and Batch are the numbers of latency-critical and batch vCPUs.
	LC, Batch int
	// Cores are the managed CPUs; empty means every CPU but SchedCPU.
	Cores []int
	// SchedCPU is the scheduler thread's CPU. Default 0.
	SchedCPU int
	// Duration is the measured time per policy; Warmup precedes it.
	Duration, Warmup time.Duration
	// Load is each LC vCPU's offered load as a fraction of one core
	// (rate = Load / mean service time). Default 0.2.
	Load float64
	// Service is the LC service-time distribution. Default exp:20µs.
	Service threadvcpu.Dist
	// Period is the scheduler's pass period. Default 5µs.
	Period time.Duration
	// Sleep makes the scheduler sleep between passes.
	Sleep bool
	// FIFOPriority runs the scheduler SCHED_FIFO if > 0.
	FIFOPriority int
	// Central configures the central policy.
	Central sched.CentralConfig
	// NoObserver runs without the eBPF observer (central then only
	// time-slices batch vCPUs).
	NoObserver bool
	// Seed seeds the request streams; every policy sees the same ones.
	Seed uint64
}

func (c *Config) setDefaults() error {
	if len(c.Policies) == 0 {
		c.Policies = []string{"all"}
	}
	var ps []string
	for _, p := range c.Policies {
		if p == "all" {
			ps = append(ps, "linux", "pinned", "central")
			continue
		}
		if _, err := sched.NewPolicy(p, sched.PolicyConfig{}); err != nil {
			return err
		}
		ps = append(ps, p)
	}
	c.Policies = ps
	if c.LC < 1 {
		return errors.New("bench: need at least one latency-critical vCPU (--lc)")
	}
	if c.Batch < 0 {
		return errors.New("bench: negative batch vCPU count")
	}
	if len(c.Cores) == 0 {
		for i := 0; i < runtime.NumCPU(); i++ {
			if i != c.SchedCPU {
				c.Cores = append(c.Cores, i)
			}
		}
	}
	if len(c.Cores) == 0 {
		return fmt.Errorf("bench: no CPU left to manage besides the scheduler's CPU %d", c.SchedCPU)
	}
	for _, cpu := range c.Cores {
		if cpu < 0 || cpu >= runtime.NumCPU() {
			return fmt.Errorf("bench: core %d: this host has CPUs 0-%d", cpu, runtime.NumCPU()-1)
		}
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.Warmup <= 0 {
		c.Warmup = c.Duration / 10
	}
	if c.Load <= 0 {
		c.Load = 0.2
	}
	if c.Service == nil {
		c.Service = threadvcpu.Exponential(20 * time.Microsecond)
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	return nil
}
