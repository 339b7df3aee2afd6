package sched

import (
	"runtime"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func affinity(t *testing.T, tid int) []int {
	t.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		return nil // exited
	}
	var out []int
	for c := 0; c < 1024; c++ {
		if set.IsSet(c) {
			out = append(out, c)
		}
	}
	return out
}

// Housekeep moves every thread with the default affinity, leaves pinned
// ones alone, and the threads started afterwards inherit it.
func TestHousekeep(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Fatalf("needs 2 CPUs, have %d", runtime.NumCPU())
	}
	procs := runtime.GOMAXPROCS(0)
	// A thread pinned by its owner, like a poller, and one the caller
	// claims (skip), like a vCPU thread.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	locked := func(cpu int) int {
		tidc := make(chan int)
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: its affinity dies with it
			if cpu >= 0 {
				var set unix.CPUSet
				set.Set(cpu)
				if err := unix.SchedSetaffinity(0, &set); err != nil {
					t.Error(err)
				}
			}
			tidc <- unix.Gettid()
			<-stop
		}()
		return <-tidc
	}
	pinnedTID, skipped := locked(1), locked(-1)
	defer func() { close(stop); wg.Wait() }()
	// Threads of earlier tests with masks of their own (a locked main
	// thread is kept, wedged, when its goroutine ends) stay as they are.
	def := affinity(t, skipped)
	own := map[int][]int{}
	ts, err := processThreads()
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range ts {
		if a := affinity(t, tid); a != nil && !slices.Equal(a, def) {
			own[tid] = a
		}
	}
	res, restore, err := Housekeep([]int{0}, func(tid int) bool { return tid == skipped })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := restore(); err != nil {
			t.Error(err)
		}
	})
	if len(res.Moved) == 0 || res.Kept < 2 {
		t.Fatalf("moved %v, kept %d: want threads moved and the pinned and the skipped one kept", res.Moved, res.Kept)
	}
	// Threads created now, locked ones among them, start on CPU 0.
	var lwg sync.WaitGroup
	tids := make(chan int, 16)
	release := make(chan struct{})
	for i := 0; i < 16; i++ {
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			<-release
		}()
	}
	var later []int
	for i := 0; i < 16; i++ {
		later = append(later, <-tids)
	}
	if ts, err = processThreads(); err != nil {
		t.Fatal(err)
	}
	for _, tid := range ts {
		a := affinity(t, tid)
		switch {
		case a == nil:
		case own[tid] != nil:
			if !slices.Equal(a, own[tid]) {
				t.Errorf("thread %d with its own mask %v now on %v", tid, own[tid], a)
			}
		case tid == pinnedTID:
			if len(a) != 1 || a[0] != 1 {
				t.Errorf("pinned thread %d now on %v", tid, a)
			}
		case tid == skipped:
			if len(a) < 2 {
				t.Errorf("skipped thread %d moved to %v", tid, a)
			}
		case len(a) != 1 || a[0] != 0:
			t.Errorf("thread %d on CPUs %v, want [0]", tid, a)
		}
	}
	for _, tid := range later {
		if a := affinity(t, tid); a != nil && (len(a) != 1 || a[0] != 0) {
			t.Errorf("thread %d locked after Housekeep on %v", tid, a)
		}
	}
	close(release)
	lwg.Wait()
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Fatalf("GOMAXPROCS %d, was %d", got, procs)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	for _, tid := range append(res.Moved, later...) {
		if a := affinity(t, tid); a != nil && !slices.Equal(a, def) {
			t.Errorf("thread %d on %v after restore, want %v", tid, a, def)
		}
	}
}

func TestHousekeepingCPUs(t *testing.T) {
	got := HousekeepingCPUs([]int{0, 1, 2, 3, 4}, []int{1, 2}, []int{4})
	if len(got) != 2 || got[0] != 0 || got[1] != 3 {
		t.Fatalf("got %v", got)
	}
	if got := HousekeepingCPUs([]int{0, 1}, []int{0, 1}); len(got) != 0 {
		t.Fatalf("got %v, want none", got)
	}
	if _, _, err := Housekeep(nil, nil); err == nil {
		t.Fatal("no CPUs accepted")
	}
}
