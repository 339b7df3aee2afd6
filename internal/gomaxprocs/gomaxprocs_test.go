package gomaxprocs

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
)

// fake is a settable GOMAXPROCS.
type fake struct{ n, calls int }

func (f *fake) procs(n int) int {
	old := f.n
	if n > 0 {
		f.n = n
		f.calls++
	}
	return old
}

func expect(t *testing.T, f *fake, tb *table, want, base, reserved int) {
	t.Helper()
	if f.n != want {
		t.Fatalf("GOMAXPROCS = %d, want %d", f.n, want)
	}
	if b, r := tb.state(); b != base || r != reserved {
		t.Fatalf("state = base %d reserved %d, want %d %d", b, r, base, reserved)
	}
}

func TestOverlappingReservations(t *testing.T) {
	f := &fake{n: 4}
	tb := &table{procs: f.procs}
	a := tb.reserve(2)
	expect(t, f, tb, 6, 4, 2)
	b := tb.reserve(3)
	expect(t, f, tb, 9, 4, 5)
	// The first to end takes away only its own (the bug of save/restore).
	a()
	expect(t, f, tb, 7, 4, 3)
	a() // idempotent
	expect(t, f, tb, 7, 4, 3)
	b()
	expect(t, f, tb, 4, 4, 0)
	if z := tb.reserve(0); f.calls != 4 {
		t.Fatalf("Reserve(0) changed GOMAXPROCS (%d calls)", f.calls)
	} else {
		z()
	}
}

func TestBaseFollowsOthersChanges(t *testing.T) {
	f := &fake{n: 4}
	tb := &table{procs: f.procs}
	a := tb.reserve(2)
	expect(t, f, tb, 6, 4, 2)
	f.n = 10 // the program sets GOMAXPROCS itself while a is live
	b := tb.reserve(1)
	expect(t, f, tb, 11, 8, 3)
	a()
	b()
	expect(t, f, tb, 8, 8, 0)
	f.n = 2 // and again while nothing is reserved
	c := tb.reserve(1)
	expect(t, f, tb, 3, 2, 1)
	f.n = 1 // below the live reservations: base stays ≥ 1
	c()
	expect(t, f, tb, 1, 1, 0)
}

func TestNegativePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Reserve(-1) did not panic")
		}
	}()
	Reserve(-1)
}

// Reservations made and released concurrently, some released twice, on
// the real runtime: GOMAXPROCS ends where it began, and while they run it
// is never below the base plus the reservations known to be live.
func TestConcurrentReserveRelease(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	if b, r := State(); b != before || r != 0 {
		t.Fatalf("state before: base %d reserved %d, GOMAXPROCS %d", b, r, before)
	}
	held := Reserve(1) // live throughout
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 1))
			for i := 0; i < 200; i++ {
				n := 1 + rng.IntN(3)
				rel := Reserve(n)
				if got := runtime.GOMAXPROCS(0); got < before+1+n {
					t.Errorf("GOMAXPROCS %d while %d+1+%d are reserved", got, before, n)
				}
				rel()
				if rng.IntN(4) == 0 {
					rel()
				}
			}
		}(uint64(g))
	}
	wg.Wait()
	if got := runtime.GOMAXPROCS(0); got != before+1 {
		t.Fatalf("GOMAXPROCS %d after the others, want %d", got, before+1)
	}
	held()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("GOMAXPROCS %d at the end, want %d", got, before)
	}
	if b, r := State(); b != before || r != 0 {
		t.Fatalf("state after: base %d reserved %d", b, r)
	}
}
