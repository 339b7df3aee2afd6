package sched

// Linux is the baseline policy: no intervention. It unparks every vCPU and
// lets each float over all managed cores, leaving placement and preemption
// to the host kernel's scheduler.
type Linux struct{}

// Name implements [Policy].
func (Linux) Name() string { return "linux" }

// Start implements [Policy]: unpark everything and float everything.
func (Linux) Start(v *View, out []Action) []Action {
	for i := range v.VCPUs {
		if v.VCPUs[i].Home != Floating {
			out = append(out, Action{Op: OpFloat, VCPU: i})
		}
		if v.VCPUs[i].Parked {
			out = append(out, Action{Op: OpUnpark, VCPU: i})
		}
	}
	return out
}

// Decide implements [Policy]: it never acts.
func (Linux) Decide(_ *View, out []Action) []Action { return out }

// Update implements [Updater]: it floats and unparks the new vCPUs (the
// others are floating and unparked already).
func (l Linux) Update(v *View, _ []int, out []Action) []Action { return l.Start(v, out) }

// Passive implements [Passive]: the linux policy needs no passes.
func (Linux) Passive() bool { return true }
