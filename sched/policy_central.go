package sched

import "time"

// CentralConfig are the central policy's parameters.
type CentralConfig struct {
	// Threshold is the runqueue latency after which a waiting
	// latency-critical vCPU preempts the batch vCPU on its core (or
	// migrates to an idle managed core). Default 20µs.
	Threshold time.Duration
	// Quantum is the time slice batch vCPUs get when there are more of
	// them than managed cores. Default 2ms.
	Quantum time.Duration
	// Grace is how long every latency-critical vCPU on a core must have
	// been sleeping before a preempted batch vCPU gets the core back.
	// Default 50µs.
	Grace time.Duration
}

// DefaultCentralConfig returns the central policy's defaults.
func DefaultCentralConfig() CentralConfig {
	return CentralConfig{
		Threshold: 20 * time.Microsecond,
		Quantum:   2 * time.Millisecond,
		Grace:     50 * time.Microsecond,
	}
}

func (c CentralConfig) withDefaults() CentralConfig {
	d := DefaultCentralConfig()
	if c.Threshold <= 0 {
		c.Threshold = d.Threshold
	}
	if c.Quantum <= 0 {
		c.Quantum = d.Quantum
	}
	if c.Grace < 0 {
		c.Grace = 0
	} else if c.Grace == 0 {
		c.Grace = d.Grace
	}
	return c
}

// Central is the microsecond policy. Latency-critical (LC) vCPUs are pinned
// round-robin to the managed cores and never parked. Each core has at most
// one batch vCPU allowed to run on it; the other batch vCPUs wait parked in
// a FIFO queue and rotate in every Quantum. When an LC vCPU has waited on a
// runqueue for Threshold, the batch vCPU on its core is parked (preempted);
// it is unparked once every LC vCPU on that core has slept for Grace. An LC
// vCPU that keeps waiting with no batch vCPU to preempt on its core (it
// queues behind another LC vCPU or a foreign thread) migrates to a managed
// core with no running LC vCPU.
//
// Start places LC vCPUs round-robin and gives the first batch vCPUs one
// core each. vCPUs registered later ([Central.Update]) are placed around
// the others, which keep their cores, slices and queue places: a new LC
// vCPU goes to the core with the fewest LC vCPUs, a new batch vCPU to a
// core without one if no batch vCPU is queued, else to the queue's tail.
// A core whose batch vCPU leaves is refilled from the queue at the next
// pass.
type Central struct {
	cfg CentralConfig

	// Per core.
	batch      []int   // batch vCPU assigned to the core, or -1
	preempted  []bool  // that batch vCPU is parked for an LC vCPU
	sliceStart []int64 // when the assigned batch vCPU got the core
	lcBusy     []bool  // an LC vCPU homed here is runnable or running
	lcQuietAt  []int64 // latest time an LC homed here went to sleep

	// Per vCPU.
	actedAt []int64 // last time the policy acted for this LC vCPU
	home    []int   // where the policy has pinned the vCPU

	// FIFO ring of batch vCPUs waiting for a core.
	queue      []int
	head, size int
}

// NewCentral returns a central policy; zero fields of cfg take defaults.
func NewCentral(cfg CentralConfig) *Central {
	return &Central{cfg: cfg.withDefaults()}
}

// Name implements [Policy].
func (*Central) Name() string { return "central" }

// Config returns the policy's parameters with defaults filled in.
func (p *Central) Config() CentralConfig { return p.cfg }

func (p *Central) push(i int) {
	p.queue[(p.head+p.size)%len(p.queue)] = i
	p.size++
}

func (p *Central) pop() int {
	i := p.queue[p.head]
	p.head = (p.head + 1) % len(p.queue)
	p.size--
	return i
}

// Start implements [Policy].
func (p *Central) Start(v *View, out []Action) []Action {
	nc, nv := len(v.Cores), len(v.VCPUs)
	p.batch = make([]int, nc)
	p.preempted = make([]bool, nc)
	p.sliceStart = make([]int64, nc)
	p.lcBusy = make([]bool, nc)
	p.lcQuietAt = make([]int64, nc)
	p.actedAt = make([]int64, nv)
	p.home = make([]int, nv)
	p.queue = make([]int, nv+1)
	p.head, p.size = 0, 0
	for c := range p.batch {
		p.batch[c] = -1
	}
	if nc == 0 {
		return out
	}
	lc, b := 0, 0
	for i := range v.VCPUs {
		vc := &v.VCPUs[i]
		var core int
		if vc.Class == LatencyCritical {
			core = lc % nc
			lc++
		} else {
			if b >= nc {
				out = p.place(vc, i, -1, out)
				continue
			}
			core = b
			b++
			p.batch[core] = i
			p.sliceStart[core] = v.Now
		}
		out = p.place(vc, i, core, out)
	}
	return out
}

// place homes vCPU i (whose view is vc) on core and lets it run there, or,
// with core < 0, queues it parked.
func (p *Central) place(vc *VCPUView, i, core int, out []Action) []Action {
	if core < 0 {
		p.home[i] = vc.Home
		p.push(i)
		if !vc.Parked {
			out = append(out, Action{Op: OpPark, VCPU: i})
		}
		return out
	}
	p.home[i] = core
	if vc.Home != core {
		out = append(out, Action{Op: OpPin, VCPU: i, Core: core})
	}
	if vc.Parked {
		out = append(out, Action{Op: OpUnpark, VCPU: i})
	}
	return out
}

// Update implements [Updater].
func (p *Central) Update(v *View, prev []int, out []Action) []Action {
	nc, nv := len(v.Cores), len(v.VCPUs)
	if len(p.batch) != nc || nc == 0 {
		return p.Start(v, out)
	}
	// Re-index the per-vCPU state; -1 marks a removed vCPU.
	newIdx := make([]int, len(p.home))
	for j := range newIdx {
		newIdx[j] = -1
	}
	home := make([]int, nv)
	actedAt := make([]int64, nv)
	for i, j := range prev {
		home[i] = homeUnknown
		if j >= 0 && j < len(newIdx) {
			newIdx[j] = i
			home[i], actedAt[i] = p.home[j], p.actedAt[j]
		}
	}
	for c, b := range p.batch {
		if b >= 0 {
			if p.batch[c] = newIdx[b]; p.batch[c] < 0 {
				p.preempted[c] = false // the core is free; Decide refills it
			}
		}
	}
	queue := make([]int, nv+1)
	size := 0
	for k := 0; k < p.size; k++ {
		if i := newIdx[p.queue[(p.head+k)%len(p.queue)]]; i >= 0 {
			queue[size] = i
			size++
		}
	}
	p.home, p.actedAt, p.queue, p.head, p.size = home, actedAt, queue, 0, size

	// Place the new vCPUs.
	lcOn := make([]int, nc)
	for i := range v.VCPUs {
		if prev[i] >= 0 && v.VCPUs[i].Class == LatencyCritical && p.home[i] >= 0 {
			lcOn[p.home[i]]++
		}
	}
	for i := range v.VCPUs {
		if prev[i] >= 0 {
			continue
		}
		vc := &v.VCPUs[i]
		core := -1
		if vc.Class == LatencyCritical {
			core = 0
			for c := range lcOn {
				if lcOn[c] < lcOn[core] {
					core = c
				}
			}
			lcOn[core]++
		} else if p.size == 0 {
			for c, b := range p.batch {
				if b < 0 {
					core = c
					break
				}
			}
			if core >= 0 {
				p.batch[core] = i
				p.preempted[core] = false
				p.sliceStart[core] = v.Now
			}
		}
		out = p.place(vc, i, core, out) // core < 0: a batch vCPU waits
	}
	return out
}

// Decide implements [Policy].
func (p *Central) Decide(v *View, out []Action) []Action {
	now := v.Now
	thr := int64(p.cfg.Threshold)

	markLC(v, p.home, p.lcBusy, p.lcQuietAt)
	// LC vCPUs that waited too long: preempt, or migrate.
	out = kickOrMigrate(v, thr, p.home, p.actedAt, p.batch, p.preempted, p.lcBusy, nil, true, out)

	// Cores handed back to batch, slices, empty cores.
	for c := range p.batch {
		b := p.batch[c]
		quiet := !p.lcBusy[c] && now-p.lcQuietAt[c] >= int64(p.cfg.Grace)
		if b >= 0 && p.preempted[c] && quiet {
			out = append(out, Action{Op: OpUnpark, VCPU: b})
			p.preempted[c] = false
			p.sliceStart[c] = now
			continue
		}
		if p.size == 0 {
			continue
		}
		if b >= 0 && now-p.sliceStart[c] < int64(p.cfg.Quantum) {
			continue
		}
		if b >= 0 {
			if !p.preempted[c] {
				out = append(out, Action{Op: OpPark, VCPU: b})
			}
			p.push(b)
		}
		n := p.pop()
		p.batch[c] = n
		p.sliceStart[c] = now
		if p.home[n] != c {
			out = append(out, Action{Op: OpPin, VCPU: n, Core: c})
			p.home[n] = c
		}
		p.preempted[c] = !quiet
		if quiet {
			out = append(out, Action{Op: OpUnpark, VCPU: n})
		}
	}
	return out
}

// idleCore returns a core other than not whose lcBusy is false, preferring
// one with no batch vCPU (batch[c] < 0) or a preempted one; -1 if none.
func idleCore(batch []int, preempted, lcBusy []bool, not int) int {
	best := -1
	for c := range batch {
		if c == not || lcBusy[c] {
			continue
		}
		if batch[c] < 0 || preempted[c] {
			return c
		}
		if best < 0 {
			best = c
		}
	}
	return best
}

// markLC sets busy[c] for the cores whose homed LC vCPUs (home[i]) are
// runnable or running, and quietAt[c] to when the last of the others went
// to sleep.
func markLC(v *View, home []int, busy []bool, quietAt []int64) {
	for c := range busy {
		busy[c] = false
		quietAt[c] = 0
	}
	for i := range v.VCPUs {
		vc := &v.VCPUs[i]
		if vc.Class != LatencyCritical || home[i] < 0 || home[i] >= len(busy) {
			continue
		}
		h := home[i]
		switch vc.Obs.State {
		case Runnable, Running:
			busy[h] = true
		case Sleeping:
			if vc.Obs.Since > quietAt[h] {
				quietAt[h] = vc.Obs.Since
			}
		}
	}
}

// kickOrMigrate acts for every LC vCPU that has waited on a runqueue for
// thr (and was not acted for within thr): it parks the batch vCPU holding
// its core (batch, preempted per core), if parkable (nil: any) allows, or
// else pins the LC vCPU to an [idleCore], parking the batch vCPU there too
// if parkDest.
func kickOrMigrate(v *View, thr int64, home []int, actedAt []int64, batch []int, preempted, busy []bool,
	parkable func(b int) bool, parkDest bool, out []Action) []Action {
	now := v.Now
	for i := range v.VCPUs {
		vc := &v.VCPUs[i]
		if vc.Class != LatencyCritical || vc.Obs.State != Runnable ||
			now-vc.Obs.Since < thr || now-actedAt[i] < thr || home[i] < 0 {
			continue
		}
		h := home[i]
		if b := batch[h]; b >= 0 && !preempted[h] && (parkable == nil || parkable(b)) {
			out = append(out, Action{Op: OpPark, VCPU: b})
			preempted[h] = true
			actedAt[i] = now
			continue
		}
		d := idleCore(batch, preempted, busy, h)
		if d < 0 {
			continue
		}
		out = append(out, Action{Op: OpPin, VCPU: i, Core: d})
		home[i] = d
		busy[d] = true
		actedAt[i] = now
		if b := batch[d]; b >= 0 && !preempted[d] && parkDest {
			out = append(out, Action{Op: OpPark, VCPU: b})
			preempted[d] = true
		}
	}
	return out
}
