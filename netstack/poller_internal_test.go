package netstack

import (
	"runtime"
	"testing"
	"time"
)

// TestIdleSpinAdapts: a dedicated poller's spin before sleeping doubles
// after each short sleep, up to MaxIdleAfter, and halves after long ones,
// down to IdleAfter; a shared one does not spin by default
// (DefaultSharedIdleAfter) and keeps an IdleAfter it is given.
func TestIdleSpinAdapts(t *testing.T) {
	st, err := New(Config{PollerCores: []int{0}, Sharing: SharingDedicated, IdleAfter: 100 * time.Microsecond, MaxIdleAfter: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p := st.pollers[0]
	if p.shared || p.spin != int64(100*time.Microsecond) {
		t.Fatalf("dedicated poller: shared %v, spin %v", p.shared, time.Duration(p.spin))
	}
	for _, want := range []time.Duration{200, 400, 800, 1000, 1000} {
		p.adapt(int64(50 * time.Microsecond))
		if got := time.Duration(p.spin); got != want*time.Microsecond {
			t.Fatalf("after a short sleep: spin %v, want %v", got, want*time.Microsecond)
		}
	}
	for _, want := range []time.Duration{500, 250, 125, 100, 100} {
		p.adapt(int64(5 * time.Millisecond))
		if got := time.Duration(p.spin); got != want*time.Microsecond {
			t.Fatalf("after a long sleep: spin %v, want %v", got, want*time.Microsecond)
		}
	}
	if s := st.Stats().Pollers[0]; s.IdleSpinNanos != int64(100*time.Microsecond) || s.Shared {
		t.Fatalf("stats %+v", s)
	}

	shared, err := New(Config{Pollers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	q := shared.pollers[0]
	if !q.shared || q.spin != int64(DefaultSharedIdleAfter) || q.maxSpin != int64(DefaultSharedIdleAfter) {
		t.Fatalf("unpinned poller: shared %v, spin %v, max spin %v; want shared, no spin", q.shared, time.Duration(q.spin), time.Duration(q.maxSpin))
	}
	for _, slept := range []time.Duration{10 * time.Microsecond, time.Second} {
		q.adapt(int64(slept))
		if q.spin != int64(DefaultSharedIdleAfter) {
			t.Fatalf("after a sleep of %v the shared poller's spin is %v", slept, time.Duration(q.spin))
		}
	}
	if s := shared.Stats().Pollers[0]; !s.Shared || s.IdleSpinNanos != int64(DefaultSharedIdleAfter) {
		t.Fatalf("shared stats %+v", s)
	}

	given, err := New(Config{Pollers: 1, IdleAfter: 50 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	defer given.Close()
	g := given.pollers[0]
	if g.spin != int64(50*time.Microsecond) || g.maxSpin != g.spin {
		t.Fatalf("shared poller told IdleAfter 50µs: spin %v, max spin %v", time.Duration(g.spin), time.Duration(g.maxSpin))
	}
	g.adapt(int64(10 * time.Microsecond))
	if g.spin != int64(50*time.Microsecond) {
		t.Fatalf("shared poller's given spin grew to %v", time.Duration(g.spin))
	}

	pinned, err := New(Config{PollerCores: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	r := pinned.pollers[0]
	if want := runtime.NumCPU() == 1; r.shared != want {
		t.Fatalf("pinned poller on %d CPUs: shared %v", runtime.NumCPU(), r.shared)
	}
	if !r.shared && r.maxSpin != int64(DefaultMaxIdleAfter) {
		t.Fatalf("pinned dedicated poller: max spin %v, want %v", time.Duration(r.maxSpin), DefaultMaxIdleAfter)
	}
}
