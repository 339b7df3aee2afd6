package observer

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/colibrivm/colibri/sched"
)

// thread runs f in a loop on a new locked OS thread pinned to cpu until
// ctx is done, and returns its tid.
func thread(ctx context.Context, t *testing.T, cpu int, f func()) int {
	t.Helper()
	tid, _ := pinned(t, cpu, func() {
		for ctx.Err() == nil {
			f()
		}
	})
	return tid
}

func TestObserverSeesWakeWaitRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test loads eBPF programs and must run as root ('make test' runs it as root)")
	}
	if runtime.NumCPU() < 2 {
		t.Fatalf("needs 2 CPUs, have %d", runtime.NumCPU())
	}
	// Every locked thread below holds a Go P while it runs: give each one.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))
	o, err := New(Options{ManagedCPUs: []int{1}})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var x atomic.Uint64
	spinner := thread(ctx, t, 1, func() {
		for i := 0; i < 1000; i++ {
			x.Add(1)
		}
	})
	sleeper := thread(ctx, t, 1, func() { time.Sleep(500 * time.Microsecond) })
	thread(ctx, t, 1, func() { time.Sleep(2 * time.Millisecond) }) // foreign

	ss, err := o.Watch(sleeper)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := o.Watch(spinner)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := o.Watch(sleeper); again != ss {
		t.Fatalf("watching again gave slot %d, want %d", again, ss)
	}

	// Sample the sleeper's state from a thread pinned to CPU 0 for 300ms
	// (on CPU 1 it would only ever see the sleeper asleep).
	seen := map[sched.RunState]int{}
	_, sampled := pinned(t, 0, func() {
		var st sched.ThreadState
		deadline := time.Now().Add(300 * time.Millisecond)
		for time.Now().Before(deadline) {
			o.Load(ss, &st)
			seen[st.State]++
			if st.State == sched.Running && st.CPU != 1 {
				t.Errorf("sleeper pinned to CPU 1 seen running on CPU %d", st.CPU)
				return
			}
			if now := sched.Nanotime(); st.Since > now || now-st.Since > int64(10*time.Second) {
				t.Errorf("since %d not on the monotonic clock (now %d)", st.Since, now)
				return
			}
		}
	})
	<-sampled
	cancel()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("sleeper states seen: %v switches %d/%d", seen, o.Switches(ss), o.Switches(sp))
	if seen[sched.Sleeping] == 0 || seen[sched.Running]+seen[sched.Runnable] == 0 {
		t.Fatalf("sleeper states seen %v: want sleeping and running/runnable", seen)
	}

	hs, err := o.SlotHist(ss)
	if err != nil {
		t.Fatal(err)
	}
	hp, err := o.SlotHist(sp)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := o.CPUHist(1)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	hs.Print(&buf)
	t.Logf("sleeper runqueue latency:\n%s", buf.String())
	// ~600 wake-ups of 500µs sleeps in 300ms; a loaded machine gives fewer.
	if n := hs.Count(); n < 50 {
		t.Fatalf("sleeper histogram has %d samples, want ≥50", n)
	}
	if sw := o.Switches(ss); sw < hs.Count() {
		t.Fatalf("sleeper switched in %d times but has %d latency samples", sw, hs.Count())
	}
	// Sharing CPU 1 with a spinner, the sleeper must sometimes wait ≥1µs.
	if hs.Count() == uint64(hs[0]) {
		t.Fatal("sleeper never waited ≥1µs behind the spinner")
	}
	if hp.Count() == 0 {
		t.Fatal("spinner never waited for CPU 1 (the sleeper preempts it)")
	}
	if hc.Count() < hs.Count()+hp.Count() {
		t.Fatalf("CPU 1 histogram has %d samples, fewer than its watched threads' %d+%d", hc.Count(), hs.Count(), hp.Count())
	}
	f, err := o.Foreign(1)
	if err != nil {
		t.Fatal(err)
	}
	if f == 0 {
		t.Fatal("no foreign thread counted on managed CPU 1")
	}
	f0, err := o.Foreign(0)
	if err != nil {
		t.Fatal(err)
	}
	if f0 != 0 {
		t.Fatalf("%d foreign threads counted on unmanaged CPU 0", f0)
	}
	if err := o.Unwatch(ss); err != nil {
		t.Fatal(err)
	}
	if err := o.Unwatch(ss); err == nil {
		t.Fatal("second Unwatch succeeded")
	}
}

func TestHistPrint(t *testing.T) {
	var h Hist
	h[0], h[3] = 2, 4
	var b bytes.Buffer
	h.Print(&b)
	out := b.String()
	if !strings.Contains(out, "4 -> 7") || strings.Count(out, "\n") != 5 {
		t.Fatalf("unexpected output:\n%s", out)
	}
	if h.Count() != 6 {
		t.Fatalf("count %d", h.Count())
	}
}
