package host_test

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
)

// threadMasks returns every thread of this process with its CPUs.
func threadMasks(t *testing.T) map[int][]int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int][]int{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var set unix.CPUSet
		if unix.SchedGetaffinity(tid, &set) != nil {
			continue
		}
		var cpus []int
		for c := 0; c < 1024; c++ {
			if set.IsSet(c) {
				cpus = append(cpus, c)
			}
		}
		out[tid] = cpus
	}
	return out
}

// defaultMask returns the widest of the threads' masks: that of threads
// nobody pinned.
func defaultMask(m map[int][]int) []int {
	var def []int
	for _, c := range m {
		if len(c) > len(def) {
			def = c
		}
	}
	return def
}

// A host that manages CPU 1 moves the process's own threads, the
// scheduler's included (it is not pinned), to CPU 0, and Close moves them
// back. No KVM needed: no VM is started.
func TestHostHousekeeping(t *testing.T) {
	testHousekeeping(t, spec.File{Sched: spec.Sched{Policy: "adaptive", Cores: []int{1}}})
}

// With the only other core a poller's, the process's own threads share
// the poller's core, not the managed one.
func TestHostHousekeepingOnPollerCore(t *testing.T) {
	if runtime.NumCPU() != 2 {
		t.Fatalf("needs exactly 2 CPUs (one managed, one poller's), have %d", runtime.NumCPU())
	}
	testHousekeeping(t, spec.File{Pollers: spec.Pollers{Cores: []int{0}}, Sched: spec.Sched{Policy: "adaptive", Cores: []int{1}}})
}

func testHousekeeping(t *testing.T, f spec.File) {
	if runtime.NumCPU() < 2 || os.Geteuid() != 0 {
		t.Fatalf("needs 2 CPUs and root (the observer), have %d CPUs, euid %d", runtime.NumCPU(), os.Geteuid())
	}
	before := threadMasks(t)
	def := defaultMask(before)
	h, err := host.New(context.Background(), host.Config{
		Spec:   f,
		Logger: testLogger(t, slog.LevelWarn),
	})
	if err != nil {
		t.Fatal(err)
	}
	if si := h.SchedInfo(); !si.Enabled || si.Policy.Name != "adaptive" || !slices.Equal(si.Cores, []int{1}) {
		t.Fatalf("sched info %+v", si)
	}
	for tid, m := range threadMasks(t) {
		if b, ok := before[tid]; ok && !slices.Equal(b, def) {
			continue // a mask of its own from before
		}
		if !slices.Equal(m, []int{0}) {
			t.Errorf("thread %d on CPUs %v while the host manages CPU 1, want [0]", tid, m)
		}
	}
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for tid, m := range threadMasks(t) {
		if b, ok := before[tid]; ok && !slices.Equal(b, def) {
			continue
		}
		if !slices.Equal(m, def) {
			t.Errorf("thread %d on CPUs %v after Close, want %v", tid, m, def)
		}
	}
}
