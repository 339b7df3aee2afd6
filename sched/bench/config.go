// Package bench is the scheduler experiment behind `colibri sched bench`:
// latency-critical thread vCPUs serve open-loop Poisson request streams
// while batch thread vCPUs spin on the same managed cores, under each
// scheduling policy in turn, and the request latency, throughput,
// preemptions, migrations, scheduler CPU time and runqueue latency are
// reported side by side with an isolated run (no batch vCPUs).
//
// The isolated run is the reference and must be the best case: the same
// cores, the same scheduler thread making passes the same way, the LC
// vCPUs pinned where the policies pin them, only no batch vCPU. The whole
// set (isolated, then each policy) is repeated; medians and spreads are
// reported, and a repetition in which the isolated p99 is worse than a
// colocated one is flagged as a failed measurement (something disturbed
// the isolated run) and left out of the medians. The process's own
// threads are moved off the managed cores first (sched.Housekeep), and
// each run reports how much of the managed cores other threads used and
// the hypervisor stole, so that a disturbed run shows as one: on a
// shared machine the host's load balancer sends other processes' runnable
// threads to an isolated run's idle-looking core.
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
	// Policies to run, in order; "all" expands to linux, pinned,
	// central, adaptive.
	Policies []string
	// LC and Batch are the numbers of latency-critical and batch vCPUs.
	// Each LC vCPU is a VM of its own; the batch vCPUs are spread
	// round-robin over BatchVMs VMs (default: one VM each).
	LC, Batch, BatchVMs int
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
	// Sleep makes the scheduler sleep between passes (Mode sleep).
	Sleep bool
	// Mode is how the scheduler thread waits between passes; Sleep
	// overrides it with ModeSleep. Default busy-poll.
	Mode sched.Mode
	// FIFOPriority runs the scheduler SCHED_FIFO if > 0.
	FIFOPriority int
	// Central and Adaptive configure those policies.
	Central  sched.CentralConfig
	Adaptive sched.AdaptiveConfig
	// Repeat is how many times the whole set (isolated, then every
	// policy) is measured. Default 3.
	Repeat int
	// IsolatedPolicy is the policy of the isolated run. Default pinned:
	// the LC vCPUs pinned where every pinning policy puts them, and the
	// scheduler thread making passes as it does under them.
	IsolatedPolicy string
	// NoHousekeeping leaves the process's own threads (Go runtime,
	// progress) free to run on the managed cores.
	NoHousekeeping bool
	// NoBallast lets the isolated run's cores go idle. By default each
	// managed core gets a SCHED_IDLE spinning thread in the isolated
	// run (not a vCPU, not registered, its work not counted): a waking
	// LC vCPU preempts it at once, and the core's wake-up latency is
	// that of a busy core, as in the colocated runs — an idle (halted)
	// core of a virtual machine wakes much later.
	NoBallast bool
	// Nice is the nice value of the thread vCPUs in every run alike
	// (below 0 also that of the process's autogroup). Default 0. Tried
	// at -20, vCPU and scheduler threads both, on the development VM: it
	// did not keep other processes off an isolated run's core, and it
	// made every LC p99 worse (tens of ms).
	Nice int
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
			ps = append(ps, "linux", "pinned", "central", "adaptive")
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
	if c.BatchVMs <= 0 || c.BatchVMs > c.Batch {
		c.BatchVMs = c.Batch
	}
	if c.Repeat <= 0 {
		c.Repeat = 3
	}
	if c.IsolatedPolicy == "" {
		c.IsolatedPolicy = "pinned"
	}
	if _, err := sched.NewPolicy(c.IsolatedPolicy, sched.PolicyConfig{}); err != nil {
		return fmt.Errorf("bench: isolated run: %w", err)
	}
	if c.Sleep {
		c.Mode = sched.ModeSleep
	}
	if c.Nice < -20 || c.Nice > 19 {
		return fmt.Errorf("bench: nice %d not in -20..19", c.Nice)
	}
	return nil
}
