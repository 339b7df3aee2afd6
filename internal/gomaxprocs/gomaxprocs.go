// Package gomaxprocs shares GOMAXPROCS between the parts of a process
// that each need extra Ps for the life of something: a vCPU thread or a
// busy-polling scheduler or datapath thread holds a P while it runs guest
// code or spins, so each raises GOMAXPROCS by the threads it keeps busy.
//
// Setting GOMAXPROCS absolutely (save, raise, restore) breaks as soon as
// two such lifetimes overlap: the first to end restores the value it saved
// and takes away the second's Ps. Reserve instead keeps
//
//	GOMAXPROCS = base + the sum of the live reservations
//
// where base is what the process had when the first live reservation was
// made: the runtime's default, or the user's GOMAXPROCS environment
// variable, or what the program itself set. If someone else changes
// GOMAXPROCS while reservations are live, their value (less the live
// reservations) becomes the new base at the next Reserve or release.
// Once every reservation is released, GOMAXPROCS is base again. (Like any
// runtime.GOMAXPROCS call, a reservation stops the runtime's automatic
// updates of its default from the CPU quota.)
//
// GOMAXPROCS is process-wide, so the reservations are too: this package
// holds the one table of them (a mutex and three integers). Reserve and
// the release functions are safe for concurrent use; each call that
// changes the value costs one runtime.GOMAXPROCS (a stop-the-world).
package gomaxprocs

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// table is the reservation state over one GOMAXPROCS function.
type table struct {
	mu    sync.Mutex
	procs func(int) int // runtime.GOMAXPROCS, or a fake in tests
	base  int           // GOMAXPROCS without reservations; valid while sum > 0
	sum   int           // live reservations
	set   int           // the value last set by this table
}

// process is the table of the process's GOMAXPROCS.
var process = &table{procs: runtime.GOMAXPROCS}

// Reserve raises GOMAXPROCS by n until release is called. release is
// idempotent: calling it again does nothing. Reserve(0) reserves nothing;
// a negative n panics.
func Reserve(n int) (release func()) { return process.reserve(n) }

// State returns the current base and the sum of the live reservations
// (base is GOMAXPROCS itself when nothing is reserved).
func State() (base, reserved int) { return process.state() }

func (t *table) reserve(n int) func() {
	if n < 0 {
		panic("gomaxprocs: negative reservation")
	}
	if n == 0 {
		return func() {}
	}
	t.mu.Lock()
	t.adjust(n)
	t.mu.Unlock()
	var done atomic.Bool
	return func() {
		if !done.CompareAndSwap(false, true) {
			return
		}
		t.mu.Lock()
		t.adjust(-n)
		t.mu.Unlock()
	}
}

// adjust changes the live sum by d and sets GOMAXPROCS to match; t.mu is
// held.
func (t *table) adjust(d int) {
	cur := t.procs(0)
	switch {
	case t.sum == 0:
		t.base = cur
	case cur != t.set:
		// Changed behind our back: keep the live reservations on top of
		// the new value.
		t.base = max(1, cur-t.sum)
	}
	t.sum += d
	t.set = t.base + t.sum
	if t.set != cur {
		t.procs(t.set)
	}
}

func (t *table) state() (base, reserved int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sum == 0 {
		return t.procs(0), 0
	}
	return t.base, t.sum
}
