package host

import (
	"fmt"
	"slices"
	"time"

	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/sched"
)

// PolicySpec names a scheduling policy and its parameters; zero
// parameters take the policy's defaults.
type PolicySpec struct {
	// Name is linux, pinned, central or adaptive.
	Name string
	// Threshold, Quantum and Grace are the central policy's parameters
	// (see sched.CentralConfig).
	Threshold, Quantum, Grace time.Duration
}

// needsObserver reports whether the policy reads the vCPUs' run states.
func needsObserver(policy string) bool {
	return policy == spec.PolicyCentral || policy == spec.PolicyAdaptive
}

// check refuses unknown policies and parameters the policy does not take.
func (p PolicySpec) check() error {
	if !slices.Contains(sched.PolicyNames(), p.Name) {
		return fmt.Errorf("unknown scheduling policy %q (known: %v)", p.Name, sched.PolicyNames())
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"threshold", p.Threshold}, {"quantum", p.Quantum}, {"grace", p.Grace}} {
		switch {
		case d.v < 0:
			return fmt.Errorf("%s %v: must be positive (omit it for the default)", d.name, d.v)
		case d.v > 0 && p.Name != spec.PolicyCentral:
			return fmt.Errorf("%s: only the central policy takes it, not %s", d.name, p.Name)
		}
	}
	return nil
}

// build returns the policy.
func (p PolicySpec) build() (sched.Policy, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	cfg := sched.DefaultPolicyConfig()
	if p.Threshold > 0 {
		cfg.Central.Threshold = p.Threshold
	}
	if p.Quantum > 0 {
		cfg.Central.Quantum = p.Quantum
	}
	if p.Grace > 0 {
		cfg.Central.Grace = p.Grace
	}
	return sched.NewPolicy(p.Name, cfg)
}

// withDefaults fills in the parameters the policy uses.
func (p PolicySpec) withDefaults() PolicySpec {
	if p.Name == spec.PolicyCentral {
		d := sched.DefaultCentralConfig()
		if p.Threshold == 0 {
			p.Threshold = d.Threshold
		}
		if p.Quantum == 0 {
			p.Quantum = d.Quantum
		}
		if p.Grace == 0 {
			p.Grace = d.Grace
		}
	}
	return p
}

// SchedInfo describes the host's scheduler.
type SchedInfo struct {
	// Enabled is false when the host runs no scheduler (vCPUs are left
	// to the host kernel entirely); the rest is then empty.
	Enabled bool
	// Policy is the policy in force, with its parameters.
	Policy PolicySpec
	// Cores are the managed host CPUs; Mode, Period and CPU how the
	// scheduler thread runs (CPU -1: unpinned).
	Cores  []int
	Mode   string
	Period time.Duration
	CPU    int
	// Observer says whether the eBPF observer runs; ObserverError why
	// not.
	Observer      bool
	ObserverError string
	// Stats are the scheduler's counters.
	Stats sched.Stats
	// VCPUs is how many vCPUs are registered.
	VCPUs int
}

// SchedInfo returns the scheduler's state.
func (h *Host) SchedInfo() SchedInfo {
	if h.sched == nil {
		return SchedInfo{}
	}
	cfg := h.sched.Config()
	h.polMu.Lock()
	p := h.policy
	h.polMu.Unlock()
	info := SchedInfo{Enabled: true, Policy: p.withDefaults(), Cores: slices.Clone(h.schedCores), Mode: cfg.Mode.String(),
		Period: cfg.Period, CPU: cfg.SchedCPU, Observer: h.obs != nil, Stats: h.sched.Stats()}
	if h.obsErr != nil {
		info.ObserverError = h.obsErr.Error()
	}
	h.mu.Lock()
	for _, v := range h.vms {
		info.VCPUs += v.registeredVCPUs()
	}
	h.mu.Unlock()
	return info
}

// SetPolicy switches the scheduler to p, live: the next pass runs it.
func (h *Host) SetPolicy(p PolicySpec) error {
	if h.sched == nil {
		return fmt.Errorf("set policy: this host runs no scheduler: %w", ErrUnsupported)
	}
	policy, err := p.build()
	if err != nil {
		return err
	}
	if needsObserver(p.Name) && h.obs == nil {
		return fmt.Errorf("the %s policy needs the eBPF observer, which did not load (%v): %w", p.Name, h.obsErr, ErrUnsupported)
	}
	h.polMu.Lock()
	old := h.policy
	h.policy = p
	h.sched.SetPolicy(policy)
	h.polMu.Unlock()
	h.publish(Event{Type: EventPolicy, Reason: fmt.Sprintf("%s → %s", old.Name, p.Name)})
	return nil
}
