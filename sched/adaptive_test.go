package sched

import (
	"strings"
	"testing"
	"time"
)

// group registers the vCPUs of one VM named name, TIDs base, base+1, ...
func (r *rig) group(name string, base int, classes ...Class) []*simVCPU {
	r.t.Helper()
	var vs []*simVCPU
	for i, c := range classes {
		v := &simVCPU{tid: base + i, class: c, group: name, log: &r.log}
		if err := r.s.Register(v); err != nil {
			r.t.Fatal(err)
		}
		vs = append(vs, v)
	}
	return vs
}

// simulate runs passes every step for d. Each pass the simulated host
// runs what the scheduler lets run: a batch vCPU that is not parked is
// running on its home core (sharing it equally with the other unparked
// batch vCPUs homed there) and accumulates run time; a parked one sleeps.
// LC vCPUs keep the states the test gave them. It returns each slot's run
// time over the simulation.
func (r *rig) simulate(d, step time.Duration) []int64 {
	r.t.Helper()
	ran := make([]int64, len(r.obs.st))
	end := r.clock.now + int64(d)
	for r.clock.now < end {
		r.clock.now += int64(step)
		v := &r.s.view
		share := map[int]int{}
		for i := range v.VCPUs {
			if vc := &v.VCPUs[i]; vc.Class == Batch && !vc.Parked && vc.Home >= 0 {
				share[vc.Home]++
			}
		}
		for i := range v.VCPUs {
			vc := &v.VCPUs[i]
			if vc.Class != Batch {
				continue
			}
			st := &r.obs.st[r.s.entries[i].slot]
			if !vc.Parked && vc.Home >= 0 {
				dt := int64(step) / int64(share[vc.Home])
				st.RunTime += dt
				ran[r.s.entries[i].slot] += dt
				if st.State != Running {
					st.State, st.Since, st.CPU = Running, r.clock.now, v.Cores[vc.Home]
					st.Switches++
				}
			} else if st.State != Sleeping {
				st.State, st.Since = Sleeping, r.clock.now
			}
		}
		r.pass()
	}
	return ran
}

func newAdaptiveRig(t *testing.T, cores []int, cfg AdaptiveConfig) *rig {
	t.Helper()
	return newRig(t, cores, NewAdaptive(cfg))
}

// Placement: LC vCPUs pinned and spread, one batch vCPU per core, the
// rest parked; batch threads SCHED_IDLE, LC ones normal with the
// shortest slice.
func TestAdaptivePlacement(t *testing.T) {
	r := newAdaptiveRig(t, []int{2, 3}, AdaptiveConfig{})
	r.group("lc", 100, LatencyCritical, LatencyCritical)
	r.group("b1", 200, Batch, Batch)
	r.group("b2", 300, Batch)
	got := strings.Join(r.pass(), "; ")
	want := "affinity 100 [2]; prio 100 normal/100µs; affinity 101 [3]; prio 101 normal/100µs; " +
		"prio 200 idle; affinity 200 [2]; prio 201 idle; affinity 201 [3]; prio 300 idle; park 300"
	if got != want {
		t.Fatalf("first pass:\n  got  [%s]\n  want [%s]", got, want)
	}
	if v := r.s.view; v.Groups != 3 || v.VCPUs[0].Group != v.VCPUs[1].Group || v.VCPUs[2].Group == v.VCPUs[4].Group {
		t.Fatalf("groups: %d, %+v", v.Groups, v.VCPUs)
	}
}

// With SCHED_IDLE batch vCPUs the kernel preempts them at LC wake-up, so
// an LC vCPU that waits briefly costs no kick; one that waits past the
// threshold (the kernel did not preempt) gets the batch vCPU parked, and
// the core goes back to it once the LC vCPU has slept for Grace.
func TestAdaptiveKicksOnlyPastThreshold(t *testing.T) {
	r := newAdaptiveRig(t, []int{1}, AdaptiveConfig{Threshold: 20 * time.Microsecond, Grace: 50 * time.Microsecond})
	r.group("lc", 100, LatencyCritical)
	r.group("b", 200, Batch)
	r.set(0, Sleeping, 1)
	r.set(1, Running, 1)
	r.at(0, "affinity 100 [1]", "prio 100 normal/100µs", "prio 200 idle", "affinity 200 [1]")
	r.clock.now = 1e9 + 100e3
	r.set(0, Runnable, 1)
	r.at(110) // under the threshold: the kernel's job
	r.clock.now = 1e9 + 112e3
	r.set(0, Running, 1) // it preempted the SCHED_IDLE vCPU by itself
	r.set(1, Runnable, 1)
	r.at(150)
	r.clock.now = 1e9 + 200e3
	r.set(0, Sleeping, 1)
	r.set(1, Running, 1)
	r.at(210)
	// Now the LC vCPU waits past the threshold: kick.
	r.clock.now = 1e9 + 300e3
	r.set(0, Runnable, 1)
	r.at(325, "park 200")
	r.at(330)
	r.clock.now = 1e9 + 331e3
	r.set(0, Running, 1)
	r.set(1, Sleeping, 1)
	r.clock.now = 1e9 + 340e3
	r.set(0, Sleeping, 1)
	r.at(380)
	r.at(390, "unpark 200")
	if st := r.s.Stats(); st.Parks != 1 || st.Unparks != 1 {
		t.Fatalf("parks/unparks %d/%d, want 1/1", st.Parks, st.Unparks)
	}
}

// Cores go to VMs, not vCPUs, in equal shares: VM a with three batch
// vCPUs and VM b with one share one core half and half under adaptive,
// where central's per-vCPU rotation gives a three quarters.
func TestAdaptiveFairPerVM(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   Policy
		min, max float64 // b's share
	}{
		{"adaptive", NewAdaptive(AdaptiveConfig{}), 0.45, 0.55},
		{"central", NewCentral(CentralConfig{Quantum: time.Millisecond}), 0.2, 0.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, []int{0}, tc.policy)
			r.group("a", 100, Batch, Batch, Batch)
			r.group("b", 200, Batch)
			r.pass()
			ran := r.simulate(time.Second, 10*time.Microsecond)
			a, b := ran[0]+ran[1]+ran[2], ran[3]
			share := float64(b) / float64(a+b)
			t.Logf("%s: a %v, b %v: b's share %.3f; parks %d", tc.name, time.Duration(a), time.Duration(b), share, r.s.Stats().Parks)
			if share < tc.min || share > tc.max {
				t.Fatalf("b's share %.3f, want %.2f–%.2f", share, tc.min, tc.max)
			}
			if a+b < int64(990*time.Millisecond) {
				t.Fatalf("the core ran batch work %v of 1s: not work-conserving", time.Duration(a+b))
			}
		})
	}
}

// A batch vCPU holding a core whose guest goes idle (its thread sleeps)
// hands the core on to a waiting one after Grace, and then backs off.
func TestAdaptiveWorkConserving(t *testing.T) {
	r := newAdaptiveRig(t, []int{5}, AdaptiveConfig{Grace: 50 * time.Microsecond})
	r.group("a", 100, Batch)
	r.group("b", 200, Batch)
	r.set(0, Running, 5)
	r.at(0, "prio 100 idle", "affinity 100 [5]", "prio 200 idle", "park 200")
	r.clock.now = 1e9 + 10e3
	r.set(0, Sleeping, 5) // a's guest halts
	r.at(40)
	r.at(60, "park 100", "affinity 200 [5]", "unpark 200")
	r.set(1, Running, 5)
	// b's quantum ends at 1060µs; a is in back-off until 2060µs and b
	// is the only other choice, so b keeps running (b's VM has had more
	// time than a's, yet a's guest was idle).
	r.clock.now = 1e9 + 1100e3
	if calls := r.pass(); len(calls) != 0 {
		t.Fatalf("during a's back-off: calls %v", calls)
	}
	// After it, a gets its turn again (a's VM has had less).
	r.clock.now = 1e9 + 2100e3
	if calls := strings.Join(r.pass(), "; "); calls != "park 200; unpark 100" {
		t.Fatalf("after a's back-off: calls [%s]", calls)
	}
}

// A waiting LC vCPU with nothing to preempt on its core (another LC vCPU
// runs there) migrates to a core with no busy LC vCPU.
func TestAdaptiveMigratesLC(t *testing.T) {
	r := newAdaptiveRig(t, []int{2, 3}, AdaptiveConfig{Threshold: 20 * time.Microsecond})
	r.group("x", 100, LatencyCritical)
	r.group("y", 200, LatencyCritical)
	r.group("z", 300, LatencyCritical)
	for i := 0; i < 3; i++ {
		r.set(i, Sleeping, 2)
	}
	r.at(0, "affinity 100 [2]", "prio 100 normal/100µs", "affinity 200 [3]", "prio 200 normal/100µs", "affinity 300 [2]", "prio 300 normal/100µs")
	r.set(0, Running, 2)
	r.set(2, Runnable, 2)
	r.at(30, "affinity 300 [3]")
	r.at(40)
	if st := r.s.Stats(); st.Migrations != 1 {
		t.Fatalf("migrations %d, want 1", st.Migrations)
	}
}

// Slices follow the observations: an LC vCPU's host slice is three times
// its mean run burst, within the bounds; a core's batch quantum is the
// rotation over the batch VMs competing for it.
func TestAdaptiveSlices(t *testing.T) {
	r := newAdaptiveRig(t, []int{0}, AdaptiveConfig{AdaptEvery: 100 * time.Millisecond, Rotation: 4 * time.Millisecond})
	r.group("lc", 100, LatencyCritical)
	r.group("lc2", 200, LatencyCritical)
	for i, name := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		r.group(name, 300+i, Batch)
	}
	r.pass()
	ad := r.s.policy.(*Adaptive)
	if q := ad.Quantum(0); q != time.Millisecond {
		t.Fatalf("initial quantum %v, want the maximum 1ms", q)
	}
	// In 100ms: LC 0 ran 200 bursts of 200µs, LC 1 1000 of 10µs.
	r.clock.now += int64(100 * time.Millisecond)
	r.obs.st[0] = ThreadState{State: Sleeping, CPU: 0, Since: r.clock.now, RunTime: 40e6, Switches: 200, Wakeups: 200}
	r.obs.st[1] = ThreadState{State: Sleeping, CPU: 0, Since: r.clock.now, RunTime: 10e6, Switches: 1000, Wakeups: 1000}
	calls := strings.Join(r.pass(), "; ")
	if !strings.Contains(calls, "prio 100 normal/600µs") || strings.Contains(calls, "prio 101") {
		t.Fatalf("after the period: calls [%s], want LC 100's slice 600µs and LC 101's left at 100µs", calls)
	}
	// Eight batch VMs on one core: 4ms / 8.
	if q := ad.Quantum(0); q != 500*time.Microsecond {
		t.Fatalf("quantum %v with 8 batch VMs, want 500µs", q)
	}
}

// Leaving the policy, or the scheduler, gives the threads their default
// host class back.
func TestAdaptivePrioReset(t *testing.T) {
	r := newAdaptiveRig(t, []int{0}, AdaptiveConfig{})
	lc := r.group("lc", 100, LatencyCritical)
	b := r.group("b", 200, Batch)
	r.pass()
	r.unregister(b[0])
	if calls := strings.Join(r.pass(), "; "); calls != "prio 200 normal" {
		t.Fatalf("unregistering a batch vCPU: calls [%s], want its class reset", calls)
	}
	r.group("c", 300, Batch)
	r.pass()
	r.s.SetPolicy(Linux{})
	got := strings.Join(r.pass(), "; ")
	if !strings.HasPrefix(got, "prio 100 normal; prio 300 normal; ") {
		t.Fatalf("switching to linux: calls [%s], want the classes reset first", got)
	}
	r.s.SetPolicy(NewAdaptive(AdaptiveConfig{}))
	r.pass()
	if vc := r.s.view.VCPUs; vc[0].Prio != PrioNormal || vc[0].Slice != 100*time.Microsecond || vc[1].Prio != PrioIdle {
		t.Fatalf("back to adaptive: views %+v", vc)
	}
	_ = lc
}

// Registering a VM leaves the others' vCPUs alone.
func TestAdaptiveRegisterKeepsOthers(t *testing.T) {
	r := newAdaptiveRig(t, []int{0, 1}, AdaptiveConfig{})
	a := r.group("a", 100, LatencyCritical, Batch)
	r.pass()
	b := r.group("b", 200, LatencyCritical, Batch)
	calls := r.pass()
	untouched(t, calls, "registering VM b", a...)
	if lc, batch := r.placement(); spread(lc) != 0 || spread(batch) != 0 {
		t.Fatalf("after a and b: LC %v, batch %v per core (calls %v)", lc, batch, calls)
	}
	c := r.group("c", 300, Batch)
	calls = r.pass()
	untouched(t, calls, "registering VM c", append(a, b...)...)
	if want := "prio 300 idle; park 300"; strings.Join(calls, "; ") != want {
		t.Fatalf("registering VM c: calls %v, want [%s]", calls, want)
	}
	r.unregister(a...)
	calls = r.pass()
	untouched(t, calls, "unregistering VM a", b...)
	// a's threads get their default class back.
	if want := "prio 100 normal; prio 101 normal; affinity 300 [0]; unpark 300"; strings.Join(calls, "; ") != want {
		t.Fatalf("unregistering VM a: calls %v, want [%s]", calls, want)
	}
	_ = c
}

// Group numbers: shared within a VM, stable while it has vCPUs, reused
// once it has none; a vCPU with no group is one of its own.
func TestSchedulerGroups(t *testing.T) {
	r := newRig(t, []int{0}, Pinned{})
	a := r.group("a", 100, Batch, Batch)
	lone := r.vm(150, Batch)
	b := r.group("b", 200, Batch)
	r.pass()
	g := func(i int) int { return r.s.view.VCPUs[i].Group }
	if g(0) != g(1) || g(0) == g(2) || g(2) == g(3) || g(0) == g(3) || r.s.view.Groups != 3 {
		t.Fatalf("groups %d %d %d %d of %d", g(0), g(1), g(2), g(3), r.s.view.Groups)
	}
	ga, gb := g(0), g(3)
	r.unregister(a...)
	r.group("b", 201, Batch)
	r.pass()
	// Now lone, b, b.
	if g(1) != gb || g(2) != gb || g(0) == gb {
		t.Fatalf("after a left: groups %d %d %d, want b's %d kept", g(0), g(1), g(2), gb)
	}
	r.group("d", 300, Batch)
	r.pass()
	if g(3) != ga {
		t.Fatalf("new VM d got group %d, want the free number %d", g(3), ga)
	}
	_, _ = lone, b
}
