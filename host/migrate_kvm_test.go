package host_test

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/internal/tinykernel"
)

// haltCode halts forever: hlt; jmp back to it. With the in-kernel LAPIC
// and no interrupt ever enabled, the vCPU thread sleeps in KVM_RUN: an
// idle guest.
var haltCode = []byte{0xf4, 0xeb, 0xfd}

// needCPUs fails t on a machine with fewer than n CPUs. scripts/run-kvm-tests
// gives a test whose name ends in _CPUs<n> a sandbox of n CPUs.
func needCPUs(t *testing.T, n int) {
	t.Helper()
	if c := runtime.NumCPU(); c < n {
		t.Fatalf("needs %d CPUs, have %d: run it in scripts/kvm-sandbox --cpus %d (scripts/run-kvm-tests does, from the _CPUs%d in its name)", n, c, n, n)
	}
}

// tinyVMs writes the tiny kernels and returns a function that creates and
// starts VM name of class running kernel ("count" or "halt") on h and
// waits until its vCPU is registered with the scheduler (want vCPUs in
// all).
func tinyVMs(t *testing.T, h *host.Host) func(name, class, kernel string, want int) *host.VM {
	dir := t.TempDir()
	kernels := map[string]string{}
	for name, code := range map[string][]byte{"count": tinykernel.Count, "halt": haltCode} {
		p, err := tinykernel.Write(dir, name, code)
		if err != nil {
			t.Fatal(err)
		}
		kernels[name] = p
	}
	return func(name, class, kernel string, want int) *host.VM {
		t.Helper()
		v, err := h.CreateVM(spec.VM{Name: name, Kernel: kernels[kernel], Mem: 64 << 20, Class: class})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		if err := v.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		for deadline := time.Now().Add(60 * time.Second); h.SchedInfo().VCPUs < want; {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d vCPUs registered after 60 s, want %d", name, h.SchedInfo().VCPUs, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return v
	}
}

// schedHost returns a host with scheduler settings sc (tiny guests stop
// within 2 s), closed when t ends.
func schedHost(t *testing.T, sc spec.Sched) *host.Host {
	t.Helper()
	h, err := host.New(context.Background(), host.Config{
		Spec:        spec.File{Sched: sc},
		StopTimeout: 2 * time.Second,
		Logger:      testLogger(t, slog.LevelInfo),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return h
}

func vcpuTID(t *testing.T, v *host.VM) int {
	t.Helper()
	info := v.Info()
	if len(info.VCPUs) != 1 || info.VCPUs[0].TID == 0 {
		t.Fatalf("VM %s: vCPUs %+v", v.Name(), info.VCPUs)
	}
	return info.VCPUs[0].TID
}

func cpusOf(t *testing.T, tid int) []int {
	t.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		t.Fatalf("affinity of thread %d: %v", tid, err)
	}
	var cpus []int
	for c := 0; c < 1024; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// TestKVMCentralMigratesWaitingLC_CPUs2: three LC guests on two managed
// cores, a and c spinning, b halted, start under pinned, which puts them
// a → core 0, b → core 1, c → core 0 (the fewest LC vCPUs per core) and
// never moves them. The switch to central places them the same way
// (round-robin in registration order), but now whichever of a and c waits
// for the other on core 0 — there is no batch vCPU to preempt — migrates
// to core 1, where b sleeps. The migration is counted, a and c end on
// cores of their own, and both run.
func TestKVMCentralMigratesWaitingLC_CPUs2(t *testing.T) {
	testenv.RequireKVM(t)
	needCPUs(t, 2)
	// Both cores are managed: housekeeping logs that none is left.
	h := schedHost(t, spec.Sched{Policy: spec.PolicyPinned, Cores: []int{0, 1}, Mode: "sleep", Period: 50 * time.Microsecond})
	start := tinyVMs(t, h)
	a := start("a", spec.ClassLC, "count", 1)
	b := start("b", spec.ClassLC, "halt", 2)
	c := start("c", spec.ClassLC, "count", 3)
	ta, tb, tc := vcpuTID(t, a), vcpuTID(t, b), vcpuTID(t, c)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if slices.Equal(cpusOf(t, ta), []int{0}) && slices.Equal(cpusOf(t, tb), []int{1}) && slices.Equal(cpusOf(t, tc), []int{0}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("under pinned: a on %v, b on %v, c on %v; want [0] [1] [0]", cpusOf(t, ta), cpusOf(t, tb), cpusOf(t, tc))
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitMoving(t, a, "a sharing core 0")
	waitMoving(t, c, "c sharing core 0")
	m0 := h.SchedInfo().Stats.Migrations
	if m0 != 0 {
		t.Fatalf("%d migrations under pinned", m0)
	}
	if err := h.SetPolicy(host.PolicySpec{Name: spec.PolicyCentral}); err != nil {
		t.Fatal(err)
	}
	var st host.SchedInfo
	var ca, cc []int
	for deadline := time.Now().Add(60 * time.Second); ; {
		st = h.SchedInfo()
		ca, cc = cpusOf(t, ta), cpusOf(t, tc)
		if st.Stats.Migrations > m0 && len(ca) == 1 && len(cc) == 1 && ca[0] != cc[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("60 s under central: %d migrations, a on %v, c on %v (b on %v); want a migration and a and c on cores of their own",
				st.Stats.Migrations, ca, cc, cpusOf(t, tb))
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("under central: %d migration(s) in %d passes (sandbox); a on %v, b on %v, c on %v", st.Stats.Migrations, st.Stats.Passes, ca, cpusOf(t, tb), cc)
	// Both spinning guests run, on their own cores now.
	waitMoving(t, a, "a after the migration")
	waitMoving(t, c, "c after the migration")
	if st := h.SchedInfo().Stats; st.Errors != 0 {
		t.Fatalf("scheduler errors: %d, last %v", st.Errors, st.LastError)
	}
}

// TestKVMHousekeepingIdleCost_CPUs2: a host managing CPU 1 keeps its own
// threads on CPU 0, while its vCPU threads — created from those threads,
// so on CPU 0 at first — are placed on CPU 1 (cgroup cpuset and the
// scheduler's pin). With both guests idle (halted), it measures the
// scheduler thread's CPU time in the adaptive mode under central and under
// the adaptive policy, which makes the batch vCPU thread SCHED_IDLE.
func TestKVMHousekeepingIdleCost_CPUs2(t *testing.T) {
	testenv.RequireKVM(t)
	needCPUs(t, 2)
	before := threadMasks(t)
	def := defaultMask(before)
	h := schedHost(t, spec.Sched{Policy: spec.PolicyCentral, Cores: []int{1}, Mode: "adaptive"})
	start := tinyVMs(t, h)
	lc := start("lc", spec.ClassLC, "halt", 1)
	batch := start("batch", spec.ClassBatch, "halt", 2)
	tl, tb := vcpuTID(t, lc), vcpuTID(t, batch)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if slices.Equal(cpusOf(t, tl), []int{1}) && slices.Equal(cpusOf(t, tb), []int{1}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vCPU threads on %v and %v, want [1]", cpusOf(t, tl), cpusOf(t, tb))
		}
		time.Sleep(5 * time.Millisecond)
	}
	for tid, m := range threadMasks(t) {
		if tid == tl || tid == tb {
			continue
		}
		if b, ok := before[tid]; ok && !slices.Equal(b, def) {
			continue
		}
		if !slices.Equal(m, []int{0}) {
			t.Errorf("thread %d (%s) on CPUs %v, want the housekeeping CPU [0]", tid, comm(tid), m)
		}
	}
	measure := func(what string) {
		time.Sleep(500 * time.Millisecond) // idle for IdleAfter and more
		s0, t0 := h.SchedInfo().Stats, time.Now()
		time.Sleep(3 * time.Second)
		s1, el := h.SchedInfo().Stats, time.Since(t0)
		cpu := s1.CPUTime - s0.CPUTime
		t.Logf("%s, guests idle: scheduler thread %v CPU in %v = %.1f%% of a core for 1 managed core; %d passes (sandbox)",
			what, cpu, el.Round(time.Millisecond), 100*cpu.Seconds()/el.Seconds(), s1.Passes-s0.Passes)
	}
	measure("central, mode adaptive")
	if err := h.SetPolicy(host.PolicySpec{Name: "adaptive"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); schedPolicy(t, tb) != unix.SCHED_IDLE; {
		if time.Now().After(deadline) {
			t.Fatalf("batch vCPU thread's policy %d under adaptive, want SCHED_IDLE", schedPolicy(t, tb))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p := schedPolicy(t, tl); p != unix.SCHED_NORMAL {
		t.Fatalf("LC vCPU thread's policy %d, want SCHED_NORMAL", p)
	}
	measure("adaptive, mode adaptive")
	if err := h.SetPolicy(host.PolicySpec{Name: "pinned"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); schedPolicy(t, tb) != unix.SCHED_NORMAL; {
		if time.Now().After(deadline) {
			t.Fatal("batch vCPU thread still SCHED_IDLE after leaving the adaptive policy")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := h.SchedInfo().Stats; st.Errors != 0 {
		t.Fatalf("scheduler errors: %d, last %v", st.Errors, st.LastError)
	}
}

func schedPolicy(t *testing.T, tid int) uint32 {
	t.Helper()
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		t.Fatalf("sched_getattr of thread %d: %v", tid, err)
	}
	return a.Policy
}

func comm(tid int) string {
	b, _ := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/comm")
	return strings.TrimSpace(string(b))
}
