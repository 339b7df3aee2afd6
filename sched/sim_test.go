package sched

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// simClock is a settable clock.
type simClock struct{ now int64 }

func (c *simClock) Now() int64 { return c.now }

// simObserver holds thread states set by the test.
type simObserver struct{ st []ThreadState }

func (o *simObserver) Watch(tid int) (int, error) {
	o.st = append(o.st, ThreadState{CPU: -1})
	return len(o.st) - 1, nil
}
func (o *simObserver) Unwatch(int) error              { return nil }
func (o *simObserver) Load(slot int, st *ThreadState) { *st = o.st[slot] }

// simVCPU records the calls the scheduler makes.
type simVCPU struct {
	tid   int
	class Class
	group string
	log   *[]string
}

func (v *simVCPU) TID() int      { return v.tid }
func (v *simVCPU) Class() Class  { return v.class }
func (v *simVCPU) Group() string { return v.group }
func (v *simVCPU) SetHostPrio(p HostPrio, slice time.Duration) error {
	if slice > 0 {
		*v.log = append(*v.log, fmt.Sprintf("prio %d %s/%v", v.tid, p, slice))
	} else {
		*v.log = append(*v.log, fmt.Sprintf("prio %d %s", v.tid, p))
	}
	return nil
}
func (v *simVCPU) Kick() error {
	*v.log = append(*v.log, fmt.Sprintf("kick %d", v.tid))
	return nil
}
func (v *simVCPU) Park() error {
	*v.log = append(*v.log, fmt.Sprintf("park %d", v.tid))
	return nil
}
func (v *simVCPU) Unpark() error {
	*v.log = append(*v.log, fmt.Sprintf("unpark %d", v.tid))
	return nil
}
func (v *simVCPU) SetAffinity(cpus []int) error {
	*v.log = append(*v.log, fmt.Sprintf("affinity %d %v", v.tid, cpus))
	return nil
}

// rig is a scheduler over simulated vCPUs; vCPU i has TID 100+i and
// observer slot i.
type rig struct {
	t     *testing.T
	s     *Scheduler
	clock *simClock
	obs   *simObserver
	log   []string
	vcpus []*simVCPU
}

func newRig(t *testing.T, cores []int, p Policy, classes ...Class) *rig {
	t.Helper()
	r := &rig{t: t, clock: &simClock{now: 1e9}, obs: &simObserver{}}
	s, err := New(Config{Cores: cores, SchedCPU: -1, Observer: r.obs, Clock: r.clock, Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	for i, c := range classes {
		v := &simVCPU{tid: 100 + i, class: c, log: &r.log}
		r.vcpus = append(r.vcpus, v)
		if err := s.Register(v); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// set records vCPU i's observed state at the current time.
func (r *rig) set(i int, st RunState, cpu int) {
	r.obs.st[i] = ThreadState{State: st, CPU: cpu, Since: r.clock.now}
}

// at advances the clock to 1s+us and runs a pass, expecting exactly the
// calls in want (in order).
func (r *rig) at(us float64, want ...string) {
	r.t.Helper()
	r.clock.now = 1e9 + int64(us*1e3)
	r.log = r.log[:0]
	r.s.Pass()
	got := strings.Join(r.log, "; ")
	if exp := strings.Join(want, "; "); got != exp {
		r.t.Fatalf("at %vµs: calls\n  got  [%s]\n  want [%s]", us, got, exp)
	}
	if st := r.s.Stats(); st.Errors != 0 {
		r.t.Fatalf("at %vµs: scheduler errors: %v", us, st.LastError)
	}
}

func TestLinuxFloatsAndUnparks(t *testing.T) {
	r := newRig(t, []int{2, 3}, Pinned{}, LatencyCritical, Batch)
	r.at(0, "affinity 100 [2]", "affinity 101 [3]")
	r.at(1)
	r.s.SetPolicy(Linux{})
	r.at(2, "affinity 100 [2 3]", "affinity 101 [2 3]")
	r.at(3)
	if st := r.s.Stats(); st.Migrations != 2 {
		t.Fatalf("migrations = %d, want 2", st.Migrations)
	}
}

func TestPinnedRoundRobin(t *testing.T) {
	r := newRig(t, []int{4, 5}, Pinned{}, Batch, Batch, LatencyCritical)
	r.at(0, "affinity 100 [4]", "affinity 101 [5]", "affinity 102 [4]")
	r.at(10)
	// A new vCPU restarts the policy; only the new one moves.
	v := &simVCPU{tid: 103, class: Batch, log: &r.log}
	if err := r.s.Register(v); err != nil {
		t.Fatal(err)
	}
	r.at(20, "affinity 103 [5]")
}

func TestCentralPreemptsBatchForWaitingLC(t *testing.T) {
	c := NewCentral(CentralConfig{Threshold: 20 * time.Microsecond, Quantum: 2 * time.Millisecond, Grace: 50 * time.Microsecond})
	// vCPU 0 is LC; 1 and 2 are batch; one core.
	r := newRig(t, []int{1}, c, LatencyCritical, Batch, Batch)
	r.set(0, Sleeping, 1)
	r.set(1, Running, 1)
	r.set(2, Sleeping, 1)
	r.at(0, "affinity 100 [1]", "affinity 101 [1]", "park 102")
	r.at(5)
	// The LC vCPU wakes and waits behind the batch vCPU.
	r.clock.now = 1e9 + 100e3
	r.set(0, Runnable, 1)
	r.at(110) // 10µs: under the threshold
	r.at(120, "park 101")
	r.at(125) // acted already: no second park
	r.clock.now = 1e9 + 126e3
	r.set(1, Sleeping, 1)
	r.set(0, Running, 1)
	r.at(130)
	// The LC vCPU sleeps again; the batch vCPU waits for the grace time.
	r.clock.now = 1e9 + 200e3
	r.set(0, Sleeping, 1)
	r.at(240)
	r.at(250, "unpark 101")
	r.set(1, Running, 1)
	r.at(260)
	if st := r.s.Stats(); st.Parks != 2 || st.Unparks != 1 {
		t.Fatalf("parks/unparks = %d/%d, want 2/1", st.Parks, st.Unparks)
	}
}

func TestCentralTimeSlicesBatch(t *testing.T) {
	c := NewCentral(CentralConfig{Quantum: time.Millisecond})
	r := newRig(t, []int{7}, c, Batch, Batch, Batch)
	r.at(0, "affinity 100 [7]", "park 101", "park 102")
	r.at(999)
	r.at(1000, "park 100", "affinity 101 [7]", "unpark 101")
	r.at(1500)
	r.at(2000, "park 101", "affinity 102 [7]", "unpark 102")
	r.at(3000, "park 102", "unpark 100") // 100 is already pinned to 7
	if st := r.s.Stats(); st.Migrations != 0 {
		t.Fatalf("migrations = %d, want 0 (all on one core)", st.Migrations)
	}
}

func TestCentralMigratesLCToIdleCore(t *testing.T) {
	c := NewCentral(CentralConfig{Threshold: 20 * time.Microsecond})
	// LC 0 on core 0 (CPU 2), LC 1 on core 1 (CPU 3), batch 2 on core 0.
	r := newRig(t, []int{2, 3}, c, LatencyCritical, LatencyCritical, Batch)
	r.set(0, Sleeping, 2)
	r.set(1, Sleeping, 3)
	r.set(2, Running, 2)
	r.at(0, "affinity 100 [2]", "affinity 101 [3]", "affinity 102 [2]")
	// LC 1 waits on CPU 3 behind a foreign thread: nothing to preempt
	// there, so it moves to CPU 2, whose batch vCPU is parked for it.
	r.set(1, Runnable, 3)
	r.at(30, "affinity 101 [2]", "park 102")
	r.at(40) // no second migration while it is still queued
	if st := r.s.Stats(); st.Migrations != 1 || st.Parks != 1 {
		t.Fatalf("migrations/parks = %d/%d, want 1/1", st.Migrations, st.Parks)
	}
	// LC 0 now waits on CPU 2 behind LC 1; CPU 3 is free.
	r.clock.now = 1e9 + 45e3
	r.set(1, Running, 2)
	r.set(0, Runnable, 2)
	r.at(70, "affinity 100 [3]")
}

func TestSetPolicyAtRunTime(t *testing.T) {
	r := newRig(t, []int{1}, NewCentral(CentralConfig{}), Batch, Batch)
	r.at(0, "affinity 100 [1]", "park 101")
	r.s.SetPolicy(Linux{})
	r.at(10, "affinity 100 [1]", "affinity 101 [1]", "unpark 101")
	if got := r.s.Policy().Name(); got != "linux" {
		t.Fatalf("policy = %s", got)
	}
	if err := r.s.Unregister(r.vcpus[0]); err != nil {
		t.Fatal(err)
	}
	if err := r.s.Unregister(r.vcpus[0]); err == nil {
		t.Fatal("second Unregister succeeded")
	}
}

func TestNewPolicyNames(t *testing.T) {
	for _, n := range PolicyNames() {
		p, err := NewPolicy(n, PolicyConfig{})
		if err != nil || p.Name() != n {
			t.Fatalf("NewPolicy(%q) = %v, %v", n, p, err)
		}
	}
	if _, err := NewPolicy("cfs", PolicyConfig{}); err == nil {
		t.Fatal("unknown policy accepted")
	}
}
