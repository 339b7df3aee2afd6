package sched

import "time"

// AdaptiveConfig are the adaptive policy's parameters.
type AdaptiveConfig struct {
	// Threshold is the runqueue wait after which a latency-critical
	// vCPU preempts, by kick (park), the batch vCPU on its core, or
	// migrates to a managed core with no busy LC vCPU. Default 20µs.
	Threshold time.Duration
	// Grace is how long every LC vCPU on a core must have slept before
	// a batch vCPU preempted by kick gets the core back, and how long a
	// batch vCPU holding a core must have slept before the core goes to
	// a waiting one. Default 50µs.
	Grace time.Duration
	// MinSlice and MaxSlice bound the adapted slices. Defaults 100µs
	// and 1ms.
	MinSlice, MaxSlice time.Duration
	// Rotation is the time within which every batch VM competing for a
	// core should get a turn on it: a core's batch quantum is
	// Rotation / (batch VMs competing for the core), within the slice
	// bounds. Default 4ms.
	Rotation time.Duration
	// AdaptEvery is how often slices are adapted from the observations
	// of the last period. Default 100ms.
	AdaptEvery time.Duration
	// NormalBatch keeps batch vCPU threads SCHED_OTHER instead of
	// SCHED_IDLE: then only kicks preempt them (as under central).
	NormalBatch bool
}

// DefaultAdaptiveConfig returns the adaptive policy's defaults.
func DefaultAdaptiveConfig() AdaptiveConfig {
	return AdaptiveConfig{
		Threshold:  20 * time.Microsecond,
		Grace:      50 * time.Microsecond,
		MinSlice:   100 * time.Microsecond,
		MaxSlice:   time.Millisecond,
		Rotation:   4 * time.Millisecond,
		AdaptEvery: 100 * time.Millisecond,
	}
}

func (c AdaptiveConfig) withDefaults() AdaptiveConfig {
	d := DefaultAdaptiveConfig()
	if c.Threshold <= 0 {
		c.Threshold = d.Threshold
	}
	if c.Grace <= 0 {
		c.Grace = d.Grace
	}
	if c.MinSlice <= 0 {
		c.MinSlice = d.MinSlice
	}
	if c.MaxSlice <= 0 {
		c.MaxSlice = max(d.MaxSlice, c.MinSlice)
	}
	if c.MaxSlice < c.MinSlice {
		c.MaxSlice = c.MinSlice
	}
	if c.Rotation <= 0 {
		c.Rotation = d.Rotation
	}
	if c.AdaptEvery <= 0 {
		c.AdaptEvery = d.AdaptEvery
	}
	return c
}

// Adaptive is the per-VM fair, work-conserving policy.
//
// Latency-critical (LC) vCPUs are pinned, spread over the managed cores
// (the fewest LC vCPUs per core, then the fewest of their own VM), and
// never parked. Batch vCPUs run SCHED_IDLE on the host (unless
// NormalBatch): a waking LC vCPU then preempts the batch vCPU on its core
// in the kernel's own wake-up path, at once, and a batch vCPU gets every
// cycle the LC vCPUs leave. Should an LC vCPU still wait for Threshold
// (behind another LC vCPU, a foreign thread, or a batch vCPU that is not
// SCHED_IDLE), the policy kicks: it parks the batch vCPU on that core, or
// migrates the LC vCPU to a managed core with no busy LC vCPU, as central
// does.
//
// Each core is held by at most one batch vCPU at a time; the others wait
// parked. Cores go to batch VMs by fair queueing: every VM (group, see
// [Grouper]) has a virtual time, the batch CPU time its vCPUs received
// (from the observer's run-time totals), and a core whose quantum ends
// goes to the waiting vCPU of the VM with the least, so that VMs — not
// vCPUs — share the cores equally. A VM that comes back after a long
// wait is lifted to within a few slices of the others. A core is never
// left idle while a batch vCPU waits (work-conserving): a free core is
// filled at the next pass, and a holder that has slept for Grace (its
// guest is idle) hands the core on, then waits out a growing back-off
// before it is preferred again.
//
// Slices are adapted every AdaptEvery from what the observer saw in the
// last period, within [MinSlice, MaxSlice]: an LC vCPU's host time slice
// (its EEVDF custom slice, Linux 6.12+) follows its run bursts (three
// times the mean run per switch-in), so that it finishes a typical
// request in one slice and, being shorter than the other threads' slice,
// preempts them at wake-up; a core's batch quantum is Rotation divided
// by the batch VMs competing for it, so that each gets a turn within
// Rotation.
type Adaptive struct {
	cfg AdaptiveConfig

	// Per core.
	batch      []int   // batch vCPU holding the core, or -1
	preempted  []bool  // that vCPU is parked for an LC vCPU
	sliceStart []int64 // when the holder got the core
	quantum    []int64 // the core's batch quantum, ns
	lcBusy     []bool
	lcQuietAt  []int64

	// Per vCPU.
	home      []int   // core the policy pinned it to
	actedAt   []int64 // last kick or migration for this LC vCPU
	waiting   []bool  // a batch vCPU parked for a core
	waitSince []int64 // since when it waits (FIFO among equals)
	notBefore []int64 // back-off of a batch vCPU released idle
	idleRuns  []uint8 // consecutive idle releases
	lastRun   []int64 // run time already charged to its group
	lcSlice   []int64 // the LC slice asked for, ns
	win       []ThreadState

	// Per group.
	vtime []int64

	winStart int64
	started  bool
}

// NewAdaptive returns an adaptive policy; zero fields of cfg take
// defaults.
func NewAdaptive(cfg AdaptiveConfig) *Adaptive {
	return &Adaptive{cfg: cfg.withDefaults()}
}

// Name implements [Policy].
func (*Adaptive) Name() string { return "adaptive" }

// Config returns the policy's parameters with defaults filled in.
func (p *Adaptive) Config() AdaptiveConfig { return p.cfg }

// Quantum returns core index c's current batch quantum (for tests and
// reports).
func (p *Adaptive) Quantum(c int) time.Duration {
	if c < 0 || c >= len(p.quantum) {
		return 0
	}
	return time.Duration(p.quantum[c])
}

// Start implements [Policy]: it places every vCPU afresh.
func (p *Adaptive) Start(v *View, out []Action) []Action {
	nc, nv := len(v.Cores), len(v.VCPUs)
	p.batch = make([]int, nc)
	p.preempted = make([]bool, nc)
	p.sliceStart = make([]int64, nc)
	p.quantum = make([]int64, nc)
	p.lcBusy = make([]bool, nc)
	p.lcQuietAt = make([]int64, nc)
	for c := range p.batch {
		p.batch[c] = -1
		p.quantum[c] = int64(p.cfg.MaxSlice)
	}
	p.resizeVCPUs(nv, nil)
	p.vtime = make([]int64, v.Groups)
	p.winStart = v.Now
	p.started = true
	prev := make([]int, nv)
	for i := range prev {
		prev[i] = -1
	}
	return p.placeNew(v, prev, out)
}

// resizeVCPUs re-indexes the per-vCPU state to n vCPUs; prev maps new
// indices to old ones (-1: new), nil means all new.
func (p *Adaptive) resizeVCPUs(n int, prev []int) {
	home, acted := make([]int, n), make([]int64, n)
	waiting, since := make([]bool, n), make([]int64, n)
	notBefore, idle := make([]int64, n), make([]uint8, n)
	lastRun, slice := make([]int64, n), make([]int64, n)
	win := make([]ThreadState, n)
	for i := 0; i < n; i++ {
		home[i] = homeUnknown
		j := -1
		if prev != nil {
			j = prev[i]
		}
		if j < 0 || j >= len(p.home) {
			continue
		}
		home[i], acted[i] = p.home[j], p.actedAt[j]
		waiting[i], since[i] = p.waiting[j], p.waitSince[j]
		notBefore[i], idle[i] = p.notBefore[j], p.idleRuns[j]
		lastRun[i], slice[i], win[i] = p.lastRun[j], p.lcSlice[j], p.win[j]
	}
	p.home, p.actedAt, p.waiting, p.waitSince = home, acted, waiting, since
	p.notBefore, p.idleRuns, p.lastRun, p.lcSlice, p.win = notBefore, idle, lastRun, slice, win
}

// Update implements [Updater]: the vCPUs already placed keep their
// cores, park state, quanta and virtual times; the new ones are placed
// around them.
func (p *Adaptive) Update(v *View, prev []int, out []Action) []Action {
	if !p.started || len(p.batch) != len(v.Cores) || len(v.Cores) == 0 {
		return p.Start(v, out)
	}
	newIdx := make([]int, len(p.home))
	for j := range newIdx {
		newIdx[j] = -1
	}
	for i, j := range prev {
		if j >= 0 && j < len(newIdx) {
			newIdx[j] = i
		}
	}
	for c, b := range p.batch {
		if b >= 0 {
			if p.batch[c] = newIdx[b]; p.batch[c] < 0 {
				p.preempted[c] = false // the core is free; Decide refills it
			}
		}
	}
	// Groups with a vCPU carried over keep their virtual time; a group
	// number now used by new vCPUs only starts afresh.
	vt := make([]int64, v.Groups)
	carried := make([]bool, v.Groups)
	for i, j := range prev {
		if g := v.VCPUs[i].Group; j >= 0 && g >= 0 && g < v.Groups {
			carried[g] = true
		}
	}
	for g := range vt {
		if carried[g] && g < len(p.vtime) {
			vt[g] = p.vtime[g]
		}
	}
	p.vtime = vt
	p.resizeVCPUs(len(v.VCPUs), prev)
	return p.placeNew(v, prev, out)
}

// placeNew places the vCPUs with prev[i] < 0: LC vCPUs pinned to the
// core with the fewest LC vCPUs (then the fewest of their VM), batch
// vCPUs on a core without a batch vCPU, or parked waiting.
func (p *Adaptive) placeNew(v *View, prev []int, out []Action) []Action {
	nc := len(v.Cores)
	if nc == 0 {
		return out
	}
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
		if g := vc.Group; g >= 0 && g < len(p.vtime) {
			// A new VM starts level with the least served one.
			p.vtime[g] = max(p.vtime[g], p.minVtime(v, g))
		}
		p.lastRun[i] = vc.Obs.RunTimeAt(v.Now)
		p.win[i] = vc.Obs
		if vc.Class == LatencyCritical {
			core := p.lcCore(v, lcOn, i)
			lcOn[core]++
			p.home[i] = core
			p.lcSlice[i] = int64(p.cfg.MinSlice)
			if vc.Home != core {
				out = append(out, Action{Op: OpPin, VCPU: i, Core: core})
			}
			if vc.Parked {
				out = append(out, Action{Op: OpUnpark, VCPU: i})
			}
			if vc.Prio != PrioNormal || vc.Slice != p.cfg.MinSlice {
				out = append(out, Action{Op: OpPrio, VCPU: i, Prio: PrioNormal, Slice: p.cfg.MinSlice})
			}
			continue
		}
		if want := p.batchPrio(); vc.Prio != want || vc.Slice != 0 {
			out = append(out, Action{Op: OpPrio, VCPU: i, Prio: want})
		}
		core := -1
		for c, b := range p.batch {
			if b < 0 {
				core = c
				break
			}
		}
		if core < 0 {
			p.home[i] = vc.Home
			p.waiting[i], p.waitSince[i] = true, v.Now
			if !vc.Parked {
				out = append(out, Action{Op: OpPark, VCPU: i})
			}
			continue
		}
		out = p.dispatch(v, i, core, true, out)
	}
	return out
}

func (p *Adaptive) batchPrio() HostPrio {
	if p.cfg.NormalBatch {
		return PrioNormal
	}
	return PrioIdle
}

// lcCore picks the core for new LC vCPU i.
func (p *Adaptive) lcCore(v *View, lcOn []int, i int) int {
	best, bestSame := 0, -1
	for c := range lcOn {
		same := 0
		for j := range v.VCPUs {
			if j != i && v.VCPUs[j].Class == LatencyCritical && v.VCPUs[j].Group == v.VCPUs[i].Group && p.home[j] == c {
				same++
			}
		}
		if bestSame < 0 || lcOn[c] < lcOn[best] || lcOn[c] == lcOn[best] && same < bestSame {
			best, bestSame = c, same
		}
	}
	return best
}

// minVtime returns the least virtual time of the groups other than not
// that have batch vCPUs, or 0.
func (p *Adaptive) minVtime(v *View, not int) int64 {
	m, found := int64(0), false
	for i := range v.VCPUs {
		g := v.VCPUs[i].Group
		if v.VCPUs[i].Class != Batch || g == not || g < 0 || g >= len(p.vtime) {
			continue
		}
		if !found || p.vtime[g] < m {
			m, found = p.vtime[g], true
		}
	}
	return m
}

// dispatch gives core c to batch vCPU i: pinned there, and unparked
// unless an LC vCPU on c is busy (then it holds the core preempted).
func (p *Adaptive) dispatch(v *View, i, c int, quiet bool, out []Action) []Action {
	vc := &v.VCPUs[i]
	p.batch[c] = i
	p.sliceStart[c] = v.Now
	p.waiting[i] = false
	if p.home[i] != c || vc.Home != c {
		out = append(out, Action{Op: OpPin, VCPU: i, Core: c})
	}
	p.home[i] = c
	p.preempted[c] = !quiet
	if quiet && vc.Parked {
		out = append(out, Action{Op: OpUnpark, VCPU: i})
	} else if !quiet && !vc.Parked {
		out = append(out, Action{Op: OpPark, VCPU: i})
	}
	return out
}

// Decide implements [Policy].
func (p *Adaptive) Decide(v *View, out []Action) []Action {
	now := v.Now
	thr := int64(p.cfg.Threshold)
	grace := int64(p.cfg.Grace)

	// Charge batch run time to the groups.
	nwait := 0
	for i := range v.VCPUs {
		vc := &v.VCPUs[i]
		if vc.Class == LatencyCritical {
			continue
		}
		if r := vc.Obs.RunTimeAt(now); r > p.lastRun[i] {
			if g := vc.Group; g >= 0 && g < len(p.vtime) {
				p.vtime[g] += r - p.lastRun[i]
			}
			p.lastRun[i] = r
		}
		if p.waiting[i] {
			nwait++
		}
	}
	markLC(v, p.home, p.lcBusy, p.lcQuietAt)
	// LC vCPUs that waited too long: kick the batch vCPU off their core
	// (parking a sleeping one would not help), or migrate them; a
	// SCHED_IDLE batch vCPU on the destination needs no kick.
	out = kickOrMigrate(v, thr, p.home, p.actedAt, p.batch, p.preempted, p.lcBusy,
		func(b int) bool { return v.VCPUs[b].Obs.State != Sleeping }, p.cfg.NormalBatch, out)

	// Batch cores: hand back, rotate, fill.
	for c := range p.batch {
		b := p.batch[c]
		quiet := !p.lcBusy[c] && now-p.lcQuietAt[c] >= grace
		if b >= 0 && p.preempted[c] {
			if !quiet {
				continue
			}
			out = append(out, Action{Op: OpUnpark, VCPU: b})
			p.preempted[c] = false
			p.sliceStart[c] = now
		}
		if nwait == 0 {
			continue
		}
		idle := b >= 0 && v.VCPUs[b].Obs.State == Sleeping && now-v.VCPUs[b].Obs.Since >= grace
		expired := b >= 0 && now-p.sliceStart[c] >= p.quantum[c]
		if b >= 0 && !idle && !expired {
			continue
		}
		// A vCPU in back-off only takes a core nobody else would use.
		n := p.next(v, now, b < 0 || idle)
		if n < 0 {
			continue
		}
		if b >= 0 {
			gb, gn := v.VCPUs[b].Group, v.VCPUs[n].Group
			if !idle && gb != gn && p.vt(gn) > p.vt(gb) {
				// The holder's VM is still the least served:
				// another quantum.
				p.sliceStart[c] = now
				continue
			}
			out = append(out, Action{Op: OpPark, VCPU: b})
			p.waiting[b], p.waitSince[b] = true, now
			if idle {
				p.idleRuns[b] = min(p.idleRuns[b]+1, 7)
				p.notBefore[b] = now + min(p.quantum[c]<<p.idleRuns[b], int64(10*time.Millisecond))
			} else {
				p.idleRuns[b] = 0
			}
			nwait++
		}
		if g := v.VCPUs[n].Group; g >= 0 && g < len(p.vtime) {
			lim := 4 * int64(p.cfg.MaxSlice)
			if m := p.minVtime(v, g); p.vtime[g] < m-lim {
				p.vtime[g] = m - lim
			}
		}
		nwait--
		out = p.dispatch(v, n, c, quiet, out)
	}

	if now-p.winStart >= int64(p.cfg.AdaptEvery) {
		out = p.adapt(v, now, out)
	}
	return out
}

// vt returns group g's virtual time.
func (p *Adaptive) vt(g int) int64 {
	if g < 0 || g >= len(p.vtime) {
		return 0
	}
	return p.vtime[g]
}

// next returns the waiting batch vCPU to dispatch: of the VM with the
// least virtual time, the one waiting longest; with backoff, a vCPU in
// back-off if no other waits. -1 if none.
func (p *Adaptive) next(v *View, now int64, backoff bool) int {
	best, bestBack := -1, -1
	better := func(i, j int) bool {
		gi, gj := p.vt(v.VCPUs[i].Group), p.vt(v.VCPUs[j].Group)
		return gi < gj || gi == gj && p.waitSince[i] < p.waitSince[j]
	}
	for i := range v.VCPUs {
		if !p.waiting[i] {
			continue
		}
		if now < p.notBefore[i] {
			if bestBack < 0 || p.notBefore[i] < p.notBefore[bestBack] {
				bestBack = i
			}
			continue
		}
		if best < 0 || better(i, best) {
			best = i
		}
	}
	if best < 0 && backoff {
		return bestBack
	}
	return best
}

// adapt sets the LC slices and batch quanta from the period's
// observations and starts a new period.
func (p *Adaptive) adapt(v *View, now int64, out []Action) []Action {
	minS, maxS := int64(p.cfg.MinSlice), int64(p.cfg.MaxSlice)
	// Batch VMs competing per core: those with a vCPU holding a core
	// or waiting for one, spread over the cores.
	nc := len(p.batch)
	seen := make(map[int]bool)
	for i := range v.VCPUs {
		if v.VCPUs[i].Class == Batch && (p.waiting[i] || p.holds(i)) {
			seen[v.VCPUs[i].Group] = true
		}
	}
	per := (len(seen) + nc - 1) / max(nc, 1)
	q := maxS
	if per > 1 {
		q = min(max(int64(p.cfg.Rotation)/int64(per), minS), maxS)
	}
	for c := range p.quantum {
		p.quantum[c] = q
	}
	for i := range v.VCPUs {
		vc := &v.VCPUs[i]
		w := &p.win[i]
		if vc.Class == LatencyCritical {
			if sw := vc.Obs.Switches - w.Switches; sw > 0 && vc.Obs.Switches >= w.Switches {
				burst := (vc.Obs.RunTime - w.RunTime) / int64(sw)
				s := min(max(3*burst, minS), maxS)
				p.lcSlice[i] = s
				// Change the thread only for a change of a quarter
				// or more: each change is a system call.
				if cur := int64(vc.Slice); vc.Prio != PrioNormal || s*4 < cur*3 || s*4 > cur*5 {
					out = append(out, Action{Op: OpPrio, VCPU: i, Prio: PrioNormal, Slice: time.Duration(s)})
				}
			}
		}
		*w = vc.Obs
	}
	p.winStart = now
	return out
}

// holds reports whether batch vCPU i holds a core.
func (p *Adaptive) holds(i int) bool {
	for _, b := range p.batch {
		if b == i {
			return true
		}
	}
	return false
}
