package sched

// Pinned is the static policy: vCPU i is pinned to managed core
// i mod len(cores), in registration order, and never parked. With no more
// vCPUs than cores it is a one-to-one mapping.
type Pinned struct{}

// Name implements [Policy].
func (Pinned) Name() string { return "pinned" }

// Start implements [Policy].
func (Pinned) Start(v *View, out []Action) []Action {
	if len(v.Cores) == 0 {
		return out
	}
	for i := range v.VCPUs {
		core := i % len(v.Cores)
		if v.VCPUs[i].Home != core {
			out = append(out, Action{Op: OpPin, VCPU: i, Core: core})
		}
		if v.VCPUs[i].Parked {
			out = append(out, Action{Op: OpUnpark, VCPU: i})
		}
	}
	return out
}

// Decide implements [Policy]: placement is static.
func (Pinned) Decide(_ *View, out []Action) []Action { return out }
