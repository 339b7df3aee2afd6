package sched

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// HousekeepingResult says what [Housekeep] did.
type HousekeepingResult struct {
	// Moved are the threads moved to the housekeeping CPUs.
	Moved []int
	// Kept counts the threads left alone: skipped, or with an affinity
	// of their own (not the process's default).
	Kept int
}

// Housekeep moves this process's threads onto cpus, the housekeeping
// CPUs, so that the Go runtime's threads (the scheduler's Ms, sysmon, GC
// workers, the template thread) and the other workers of the process stay
// off the managed and poller cores. A thread is moved if skip (nil: none)
// does not claim it and its affinity is the process's default — that of
// the calling goroutine's thread when Housekeep starts —; a thread someone
// pinned (a vCPU thread, a poller, a scheduler thread) keeps its own.
//
// Threads created afterwards inherit the mask of the thread that creates
// them: a Go M is started by another M, or, from a locked thread, by the
// runtime's template thread, which Housekeep makes sure exists before it
// moves it. So a vCPU thread starts on the housekeeping CPUs too, until
// the scheduler places it (or its cgroup's cpuset moves it).
//
// It first fixes GOMAXPROCS at its current value: Go (1.25+) otherwise
// re-derives it from the affinity of its sysmon thread, which would now
// see only the housekeeping CPUs. The returned restore puts every thread
// that has the housekeeping mask (moved, or started since) back on the
// default one.
func Housekeep(cpus []int, skip func(tid int) bool) (res HousekeepingResult, restore func() error, err error) {
	noop := func() error { return nil }
	if len(cpus) == 0 {
		return res, noop, errors.New("sched: housekeeping: no CPUs")
	}
	var hk unix.CPUSet
	for _, c := range cpus {
		if c < 0 || c >= 1024 {
			return res, noop, fmt.Errorf("sched: housekeeping: CPU %d out of range", c)
		}
		hk.Set(c)
	}
	// The default is what an ordinary thread has: the caller's (its
	// goroutine is not locked to a thread; the main thread may well
	// be, by whatever goroutine happened to run on it).
	var def unix.CPUSet
	runtime.LockOSThread()
	err = unix.SchedGetaffinity(0, &def)
	runtime.UnlockOSThread()
	if err != nil {
		return res, noop, fmt.Errorf("sched: housekeeping: affinity of the calling thread: %w", err)
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	// LockOSThread starts the template thread if it is not running yet.
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		runtime.UnlockOSThread()
		close(done)
	}()
	<-done

	seen := map[int]bool{}
	var errs []error
	// A thread started while the list is read may have been cloned from
	// one not moved yet: list again until a round finds no new thread.
	for round := 0; round < 8; round++ {
		tids, err := processThreads()
		if err != nil {
			return res, noop, err
		}
		fresh := 0
		for _, tid := range tids {
			if seen[tid] {
				continue
			}
			seen[tid] = true
			fresh++
			if skip != nil && skip(tid) {
				res.Kept++
				continue
			}
			var cur unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &cur); err != nil {
				continue // it exited
			}
			if cur != def {
				res.Kept++
				continue
			}
			if err := unix.SchedSetaffinity(tid, &hk); err != nil {
				if !errors.Is(err, unix.ESRCH) {
					errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
				}
				continue
			}
			res.Moved = append(res.Moved, tid)
		}
		if fresh == 0 {
			break
		}
	}
	restore = func() error {
		// Threads started since inherited the mask: every thread on
		// it goes back, not only the ones moved.
		tids, err := processThreads()
		if err != nil {
			return err
		}
		var errs []error
		for _, tid := range tids {
			var cur unix.CPUSet
			if unix.SchedGetaffinity(tid, &cur) != nil || cur != hk {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &def); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("sched: housekeeping: restore affinity: %w", err)
		}
		return nil
	}
	if err := errors.Join(errs...); err != nil {
		return res, restore, fmt.Errorf("sched: housekeeping: move threads to CPUs %v: %w", cpus, err)
	}
	return res, restore, nil
}

// processThreads lists the thread ids of this process.
func processThreads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("sched: housekeeping: list threads: %w", err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// HousekeepingCPUs returns online minus every CPU in excl (sorted as
// online is).
func HousekeepingCPUs(online []int, excl ...[]int) []int {
	skip := map[int]bool{}
	for _, e := range excl {
		for _, c := range e {
			skip[c] = true
		}
	}
	var out []int
	for _, c := range online {
		if !skip[c] {
			out = append(out, c)
		}
	}
	return out
}
