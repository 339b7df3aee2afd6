package sched

// Pinned is the static policy: each vCPU is pinned to one managed core and
// never parked. In registration order, each goes to the core with the
// fewest vCPUs of its class, then the fewest vCPUs, then the lowest index:
// with no more vCPUs than cores it is a one-to-one mapping, and latency-
// critical vCPUs share a core only when they outnumber the cores. vCPUs
// registered later are placed the same way among those already placed,
// which stay where they are; a vCPU's core is not refilled when it leaves.
type Pinned struct{}

// Name implements [Policy].
func (Pinned) Name() string { return "pinned" }

// Start implements [Policy]: it places every vCPU afresh.
func (Pinned) Start(v *View, out []Action) []Action {
	return pinNew(v, nil, out)
}

// Update implements [Updater]: it places the new vCPUs around the others.
func (Pinned) Update(v *View, prev []int, out []Action) []Action {
	return pinNew(v, prev, out)
}

// pinNew pins the vCPUs that are new (prev == nil: all of them, or
// prev[i] < 0) or not on a managed core, each to the least loaded core.
func pinNew(v *View, prev []int, out []Action) []Action {
	nc := len(v.Cores)
	if nc == 0 {
		return out
	}
	var load [2][]int
	load[0], load[1] = make([]int, nc), make([]int, nc)
	placed := func(i int) bool {
		h := v.VCPUs[i].Home
		return prev != nil && prev[i] >= 0 && h >= 0 && h < nc
	}
	for i := range v.VCPUs {
		if placed(i) {
			load[v.VCPUs[i].Class&1][v.VCPUs[i].Home]++
		}
	}
	for i := range v.VCPUs {
		if placed(i) {
			continue
		}
		vc := &v.VCPUs[i]
		core := leastLoaded(&load, vc.Class&1)
		load[vc.Class&1][core]++
		if vc.Home != core {
			out = append(out, Action{Op: OpPin, VCPU: i, Core: core})
		}
		if vc.Parked {
			out = append(out, Action{Op: OpUnpark, VCPU: i})
		}
	}
	return out
}

// Decide implements [Policy]: placement is static.
func (Pinned) Decide(_ *View, out []Action) []Action { return out }
