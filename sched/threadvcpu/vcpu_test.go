package threadvcpu

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/sched"
	"github.com/colibrivm/colibri/sched/latency"
)

// lastCPU returns the CPU thread tid last ran on and its state letter,
// from /proc/self/task/TID/stat.
func lastCPU(t testing.TB, tid int) (int, string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3 (state); field 39 (processor) is f[36].
	cpu, err := strconv.Atoi(f[36])
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return cpu, f[0]
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func startSpin(t testing.TB, cpus ...int) (*VCPU, *Spin) {
	t.Helper()
	if runtime.NumCPU() < 2 {
		t.Fatalf("needs 2 CPUs, have %d", runtime.NumCPU())
	}
	w := &Spin{}
	v, err := Start(context.Background(), Config{Class: sched.Batch, Work: w, CPUs: cpus})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Stop(); err != nil {
			t.Error(err)
		}
	})
	return v, w
}

func TestParkStopsAndUnparkResumes(t *testing.T) {
	v, w := startSpin(t, 1)
	waitFor(t, "the thread spins", func() bool { return w.Chunks() > 100 })
	if err := v.Park(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the thread parks", func() bool { return v.ParkedSince() != 0 })
	waitFor(t, "the kernel sees it sleep", func() bool { _, st := lastCPU(t, v.TID()); return st == "S" })
	n := w.Chunks()
	time.Sleep(20 * time.Millisecond)
	if m := w.Chunks(); m != n {
		t.Fatalf("parked thread computed %d chunks", m-n)
	}
	if err := v.Unpark(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the thread runs again", func() bool { return w.Chunks() > n+100 })
	if v.ParkedSince() != 0 {
		t.Fatal("running thread reports parked")
	}
	if st := v.Stats(); st.Parks != 1 || st.Parked < 20*time.Millisecond {
		t.Fatalf("stats %+v: want 1 park of ≥20ms", st)
	}
}

func TestKickInterruptsSleepingThread(t *testing.T) {
	var h latency.Histogram
	srv := &Server{Rate: 0.001, Service: Fixed(time.Microsecond), Latency: &h}
	v, err := Start(context.Background(), Config{Class: sched.LatencyCritical, Work: srv})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	waitFor(t, "the server sleeps", func() bool { _, st := lastCPU(t, v.TID()); return st == "S" })
	exits := v.Stats().Exits
	if err := v.Kick(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the kick makes the thread leave guest mode", func() bool { return v.Stats().Exits > exits })
	if v.ParkedSince() != 0 {
		t.Fatal("a kick parked the thread")
	}
	if err := v.Park(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sleeping thread parks", func() bool { return v.ParkedSince() != 0 })
	if err := v.Unpark(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the thread resumes", func() bool { return v.ParkedSince() == 0 && v.ResumedAt() != 0 })
}

func TestAffinityHolds(t *testing.T) {
	v, w := startSpin(t, 1)
	for _, cpu := range []int{1, 0, 1} {
		if err := v.SetAffinity([]int{cpu}); err != nil {
			t.Fatal(err)
		}
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(v.TID(), &set); err != nil {
			t.Fatal(err)
		}
		if set.Count() != 1 || !set.IsSet(cpu) {
			t.Fatalf("sched_getaffinity after pinning to %d: %d CPUs, has %d: %v", cpu, set.Count(), cpu, set.IsSet(cpu))
		}
		n := w.Chunks()
		waitFor(t, "the thread runs after the move", func() bool { return w.Chunks() > n+1000 })
		if got, _ := lastCPU(t, v.TID()); got != cpu {
			t.Fatalf("thread pinned to CPU %d runs on CPU %d", cpu, got)
		}
	}
	if err := v.SetAffinity(nil); err == nil {
		t.Fatal("empty affinity accepted")
	}
}

func TestServerServesOpenLoop(t *testing.T) {
	var h latency.Histogram
	srv := &Server{Rate: 20000, Service: Fixed(10 * time.Microsecond), ItersPerUS: Calibrate(), Latency: &h, Seed: 7}
	srv.Record(true)
	v, err := Start(context.Background(), Config{Class: sched.LatencyCritical, Work: srv, CPUs: []int{1}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := v.Stop(); err != nil {
		t.Fatal(err)
	}
	n := srv.Served()
	if n < 2000 || n > 6000 { // 4000 expected
		t.Fatalf("served %d requests in 200ms at 20000/s", n)
	}
	if h.Count() != n {
		t.Fatalf("histogram has %d of %d requests", h.Count(), n)
	}
	if p50 := h.Quantile(0.5); p50 < 9*time.Microsecond {
		t.Fatalf("p50 %v below the 10µs service time", p50)
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	if _, err := Start(context.Background(), Config{}); err == nil {
		t.Fatal("no work accepted")
	}
	if _, err := Start(context.Background(), Config{Work: &Spin{}, KickSignal: 33}); err == nil {
		t.Fatal("Go-reserved signal 33 accepted")
	}
	if _, err := ParseDist("bimodal:1us,2us"); err == nil {
		t.Fatal("bad bimodal accepted")
	}
	for _, s := range []string{"fixed:10µs", "exp:5us", "bimodal:5us,100us,0.1"} {
		d, err := ParseDist(s)
		if err != nil {
			t.Fatal(err)
		}
		if d2, err := ParseDist(d.String()); err != nil || d2 != d {
			t.Fatalf("%s round trip: %v %v", s, d2, err)
		}
	}
}

func TestStopOnContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	v, err := Start(ctx, Config{Work: &Spin{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Park(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the thread parks", func() bool { return v.ParkedSince() != 0 })
	cancel()
	select {
	case <-v.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("parked thread did not exit on cancel")
	}
}

// Each thread vCPU reserves one GOMAXPROCS for its life, and only its own:
// vCPUs that end in any order leave GOMAXPROCS where it was.
func TestGOMAXPROCSReservedPerVCPU(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	a, _ := startSpin(t)
	b, _ := startSpin(t)
	if got := runtime.GOMAXPROCS(0); got != base+2 {
		t.Fatalf("GOMAXPROCS %d with two thread vCPUs, want %d", got, base+2)
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != base+1 {
		t.Fatalf("GOMAXPROCS %d after the first stopped, want %d", got, base+1)
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Fatalf("GOMAXPROCS %d after both stopped, want %d", got, base)
	}
}
