package sched

import (
	"fmt"
	"sort"
	"time"
)

// Floating is the [VCPUView.Home] of a vCPU allowed on every managed core.
const Floating = -1

// VCPUView is what a policy sees of one registered vCPU in a pass.
type VCPUView struct {
	// Class is the vCPU's class.
	Class Class
	// Obs is the latest observation of the vCPU thread.
	Obs ThreadState
	// Parked is true while the scheduler has the vCPU parked (it asked
	// it to park and has not unparked it since).
	Parked bool
	// ParkedAt is when the scheduler last parked or unparked the vCPU
	// (CLOCK_MONOTONIC ns); with Parked it says since when the vCPU has
	// been parked or allowed to run.
	ParkedAt int64
	// Home is the index into [View.Cores] of the core the vCPU is pinned
	// to, or [Floating].
	Home int
	// Group is the vCPU's group (its VM, see [Grouper]): a small
	// number, the same for every vCPU of the group, below
	// [View.Groups]; stable while a vCPU of the group is registered.
	Group int
	// Prio and Slice are the host scheduling class and slice the
	// scheduler last set ([OpPrio]); PrioNormal and 0 until then. A
	// policy change or Unregister puts them back to PrioNormal, 0.
	Prio  HostPrio
	Slice time.Duration
}

// View is the scheduler's state handed to a policy each pass. Policies
// read it and must not modify it; the scheduler applies their actions.
type View struct {
	// Now is the pass's time (CLOCK_MONOTONIC ns).
	Now int64
	// Cores are the managed CPUs (host CPU numbers).
	Cores []int
	// VCPUs are the registered vCPUs, in registration order; a vCPU's
	// index is its id in actions. Indices change only when the set of
	// vCPUs changes, and the scheduler then calls [Updater.Update] (or,
	// for a policy that is no Updater, [Policy.Start]) again.
	VCPUs []VCPUView
	// Groups is one more than the largest VCPUView.Group.
	Groups int
}

// CoreIndex returns the index in v.Cores of host CPU cpu, or -1.
func (v *View) CoreIndex(cpu int) int {
	for i, c := range v.Cores {
		if c == cpu {
			return i
		}
	}
	return -1
}

// Op is what an action does.
type Op uint8

const (
	// OpPark parks a vCPU (preempts it).
	OpPark Op = iota + 1
	// OpUnpark unparks a vCPU.
	OpUnpark
	// OpPin pins a vCPU to one managed core ([Action.Core]).
	OpPin
	// OpFloat lets a vCPU run on every managed core.
	OpFloat
	// OpPrio sets a vCPU thread's host scheduling class to
	// [Action.Prio] and, under PrioNormal, its time slice to
	// [Action.Slice] (see [PrioSetter]).
	OpPrio
)

// String returns the op's name.
func (o Op) String() string {
	switch o {
	case OpPark:
		return "park"
	case OpUnpark:
		return "unpark"
	case OpPin:
		return "pin"
	case OpFloat:
		return "float"
	case OpPrio:
		return "prio"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Action is one decision of a policy.
type Action struct {
	Op Op
	// VCPU is the index into [View.VCPUs].
	VCPU int
	// Core is the index into [View.Cores] (OpPin only).
	Core int
	// Prio and Slice are the class and slice OpPrio sets.
	Prio  HostPrio
	Slice time.Duration
}

// String formats the action as "park 3", "pin 2→1", "prio 4 idle",
// "prio 1 normal/200µs".
func (a Action) String() string {
	switch a.Op {
	case OpPin:
		return fmt.Sprintf("pin %d→%d", a.VCPU, a.Core)
	case OpPrio:
		if a.Slice > 0 && a.Prio == PrioNormal {
			return fmt.Sprintf("prio %d %s/%v", a.VCPU, a.Prio, a.Slice)
		}
		return fmt.Sprintf("prio %d %s", a.VCPU, a.Prio)
	}
	return fmt.Sprintf("%s %d", a.Op, a.VCPU)
}

// Policy decides, pass after pass, which vCPU runs where.
//
// Both methods append their actions to out and return it (they must not
// allocate once out has grown to its working size). A policy is driven by
// one scheduler thread at a time; it may keep state between calls, which
// Start resets.
type Policy interface {
	// Name is the policy's name as the CLI spells it.
	Name() string
	// Start is called when the policy takes over (SetPolicy, or the
	// first pass) and, unless the policy is an [Updater], whenever the
	// set of vCPUs changes; it returns the actions that establish the
	// policy's placement from whatever the previous policy left.
	Start(v *View, out []Action) []Action
	// Decide is called every pass.
	Decide(v *View, out []Action) []Action
}

// Updater is an optional interface of a [Policy] that takes a change of
// the registered vCPUs without re-placing the others: when vCPUs are
// registered or unregistered while the policy runs, the scheduler calls
// Update instead of Start.
type Updater interface {
	// Update is given the new view and, for each vCPU i in it, prev[i]:
	// its index in the previous view, or -1 if it is new (a vCPU's
	// VCPUView — Home, Parked — carries over). It re-indexes the
	// policy's state, drops the removed vCPUs and returns the actions
	// that place the new ones; it should not act on vCPUs already placed.
	// prev is owned by the scheduler and valid only during the call.
	Update(v *View, prev []int, out []Action) []Action
}

// Passive is an optional interface of a [Policy] that may need no
// scheduling passes. While Passive reports true (it is asked after each
// change), the scheduler thread makes none: it blocks until Register,
// Unregister, SetPolicy or the end of Run, and costs no CPU. Start and
// Update still run for every change.
type Passive interface {
	Passive() bool
}

// leastLoaded returns the index of the managed core with the fewest
// vCPUs of class c placed on it (load[c][core]), then the fewest vCPUs of
// any class, then the lowest index.
func leastLoaded(load *[2][]int, c Class) int {
	best := 0
	for i := 1; i < len(load[0]); i++ {
		bi, bb := load[c][i], load[c][best]
		if bi < bb || bi == bb && load[0][i]+load[1][i] < load[0][best]+load[1][best] {
			best = i
		}
	}
	return best
}

// PolicyConfig holds every policy's parameters; zero fields take the
// defaults of [DefaultPolicyConfig].
type PolicyConfig struct {
	// Central configures the central policy.
	Central CentralConfig
	// Adaptive configures the adaptive policy.
	Adaptive AdaptiveConfig
}

// DefaultPolicyConfig returns the default parameters.
func DefaultPolicyConfig() PolicyConfig {
	return PolicyConfig{Central: DefaultCentralConfig(), Adaptive: DefaultAdaptiveConfig()}
}

// PolicyNames lists the policies [NewPolicy] knows, sorted.
func PolicyNames() []string {
	n := []string{"linux", "pinned", "central", "adaptive"}
	sort.Strings(n)
	return n
}

// NewPolicy returns the named policy configured by cfg.
func NewPolicy(name string, cfg PolicyConfig) (Policy, error) {
	switch name {
	case "linux":
		return Linux{}, nil
	case "pinned":
		return Pinned{}, nil
	case "central":
		return NewCentral(cfg.Central), nil
	case "adaptive":
		return NewAdaptive(cfg.Adaptive), nil
	}
	return nil, fmt.Errorf("unknown scheduling policy %q (known: %v)", name, PolicyNames())
}
