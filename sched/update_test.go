package sched

import (
	"fmt"
	"strings"
	"testing"
)

// vm registers n vCPUs of the given classes with TIDs base, base+1, ...
func (r *rig) vm(base int, classes ...Class) []*simVCPU {
	r.t.Helper()
	var vs []*simVCPU
	for i, c := range classes {
		v := &simVCPU{tid: base + i, class: c, log: &r.log}
		if err := r.s.Register(v); err != nil {
			r.t.Fatal(err)
		}
		vs = append(vs, v)
	}
	return vs
}

// pass runs a pass at the current time and returns its calls.
func (r *rig) pass() []string {
	r.t.Helper()
	r.log = r.log[:0]
	r.s.Pass()
	if st := r.s.Stats(); st.Errors != 0 {
		r.t.Fatalf("scheduler errors: %v", st.LastError)
	}
	return append([]string(nil), r.log...)
}

// untouched fails if any call concerns a vCPU of vs.
func untouched(t *testing.T, calls []string, what string, vs ...*simVCPU) {
	t.Helper()
	for _, c := range calls {
		for _, v := range vs {
			if f := strings.Fields(c); len(f) >= 2 && f[1] == fmt.Sprint(v.tid) {
				t.Fatalf("%s: call %q on a vCPU already placed (all calls: %v)", what, c, calls)
			}
		}
	}
}

// placement returns, per core index, the vCPUs of each class homed there
// (by the scheduler's view).
func (r *rig) placement() (lc, batch []int) {
	v := &r.s.view
	lc, batch = make([]int, len(v.Cores)), make([]int, len(v.Cores))
	for _, vc := range v.VCPUs {
		if vc.Home < 0 {
			continue
		}
		if vc.Class == LatencyCritical {
			lc[vc.Home]++
		} else if !vc.Parked {
			batch[vc.Home]++
		}
	}
	return lc, batch
}

func spread(n []int) int {
	lo, hi := n[0], n[0]
	for _, x := range n {
		lo, hi = min(lo, x), max(hi, x)
	}
	return hi - lo
}

func (r *rig) unregister(vs ...*simVCPU) {
	r.t.Helper()
	for _, v := range vs {
		if err := r.s.Unregister(v); err != nil {
			r.t.Fatal(err)
		}
	}
}

// A VM's vCPUs registered and unregistered while others run cause no
// call on the others, and the placement stays balanced.
func TestPinnedRegisterKeepsOthers(t *testing.T) {
	r := newRig(t, []int{0, 1, 2, 3}, Pinned{})
	a := r.vm(100, LatencyCritical, LatencyCritical, Batch, Batch)
	calls := r.pass()
	if len(calls) != 4 {
		t.Fatalf("first VM: calls %v, want 4 pins", calls)
	}
	b := r.vm(200, LatencyCritical, LatencyCritical, Batch, Batch)
	untouched(t, r.pass(), "registering VM b", a...)
	if lc, batch := r.placement(); spread(lc) != 0 || spread(batch) != 0 {
		t.Fatalf("after a and b: LC per core %v, batch per core %v: want 1 each", lc, batch)
	}
	r.unregister(a...)
	untouched(t, r.pass(), "unregistering VM a", b...)
	c := r.vm(300, LatencyCritical, Batch, LatencyCritical, Batch)
	calls = r.pass()
	untouched(t, calls, "registering VM c", b...)
	if lc, batch := r.placement(); spread(lc) != 0 || spread(batch) != 0 {
		t.Fatalf("after b and c: LC per core %v, batch per core %v: want 1 each (calls %v)", lc, batch, calls)
	}
	r.unregister(c[1])
	untouched(t, r.pass(), "unregistering one vCPU of c", append(b, c[0], c[2], c[3])...)
	if st := r.s.Stats(); st.Migrations != 0 || st.Parks != 0 {
		t.Fatalf("stats %+v: want no migrations and no parks", st)
	}
}

func TestCentralRegisterKeepsOthers(t *testing.T) {
	r := newRig(t, []int{0, 1}, NewCentral(CentralConfig{}))
	a := r.vm(100, LatencyCritical, Batch)
	r.pass()
	for i := range r.obs.st {
		r.set(i, Running, i)
	}
	r.clock.now += 1e3
	r.pass()
	// b's LC vCPU goes to the core without one, its batch vCPU to the
	// core without one; c's batch vCPUs find no free core and queue.
	b := r.vm(200, LatencyCritical, Batch)
	calls := r.pass()
	untouched(t, calls, "registering VM b", a...)
	if lc, batch := r.placement(); spread(lc) != 0 || spread(batch) != 0 {
		t.Fatalf("after a and b: LC %v, batch %v per core: want 1 each (calls %v)", lc, batch, calls)
	}
	r.vm(300, Batch, Batch)
	r.clock.now += 1e3
	calls = r.pass()
	untouched(t, calls, "registering VM c", append(a, b...)...)
	if want := "park 300; park 301"; strings.Join(calls, "; ") != want {
		t.Fatalf("registering VM c: calls %v, want [%s]", calls, want)
	}
	// a leaves: its batch vCPU's core is refilled from the queue (300,
	// the first queued); b is left alone.
	r.unregister(a...)
	r.clock.now += 1e3
	calls = r.pass()
	untouched(t, calls, "unregistering VM a", b...)
	if want := "affinity 300 [0]; unpark 300"; strings.Join(calls, "; ") != want {
		t.Fatalf("unregistering VM a: calls %v, want [%s]", calls, want)
	}
	// A new LC vCPU goes to core 0, which has none since a left.
	r.vm(400, LatencyCritical)
	r.clock.now += 1e3
	calls = r.pass()
	if want := "affinity 400 [0]"; strings.Join(calls, "; ") != want {
		t.Fatalf("registering VM d: calls %v, want [%s]", calls, want)
	}
	if lc, _ := r.placement(); spread(lc) != 0 {
		t.Fatalf("LC per core %v after d", lc)
	}
	if st := r.s.Stats(); st.Migrations != 0 {
		t.Fatalf("%d migrations, want 0", st.Migrations)
	}
	// The queue still rotates: at the quantum, 301 replaces a batch vCPU.
	r.clock.now += int64(DefaultCentralConfig().Quantum)
	if calls = r.pass(); !strings.Contains(strings.Join(calls, "; "), "unpark 301") {
		t.Fatalf("at the quantum: calls %v, want 301 unparked", calls)
	}
}

// SetPolicy still re-places everything.
func TestSetPolicyReplaces(t *testing.T) {
	r := newRig(t, []int{0, 1}, Pinned{}, LatencyCritical, LatencyCritical)
	r.at(0, "affinity 100 [0]", "affinity 101 [1]")
	r.s.SetPolicy(Linux{})
	r.at(1, "affinity 100 [0 1]", "affinity 101 [0 1]")
	r.s.SetPolicy(Pinned{})
	r.at(2, "affinity 100 [0]", "affinity 101 [1]")
}
