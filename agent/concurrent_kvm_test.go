package agent_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/colibrivm/colibri/agent/api"
	"github.com/colibrivm/colibri/agent/client"
	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/internal/tinykernel"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestKVMAgentConcurrent: 100 clients read VMs, counters, metrics,
// switches and the scheduler while VMs (tiny kernels) are created,
// started, paused, resumed, stopped and deleted through the API; every
// request and answer matches the OpenAPI document, nothing but 404 and
// 409 (a VM deleted meanwhile, a state that changed) comes back, and no
// goroutine or fd is left once the agent stops. Its test binary also runs
// with -race (make test). It logs API latency and pause/resume times
// (sandbox figures).
func TestKVMAgentConcurrent(t *testing.T) {
	testenv.RequireKVM(t)
	kernel, err := tinykernel.Write(t.TempDir(), "count", tinykernel.Count)
	if err != nil {
		t.Fatal(err)
	}
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	a := startAgent(t, host.Config{Spec: spec.File{Switches: []spec.Switch{{Name: "sw0"}}}, Scheduler: true, StopTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// Latency of one info request, and pause/resume per VM size.
	for _, cpus := range []int{1, 2} {
		name := fmt.Sprintf("lat%d", cpus)
		if _, err := a.c.CreateVM(ctx, api.VMSpec{Name: name, Kernel: kernel, CPUs: cpus, Mem: "64M"}, true); err != nil {
			t.Fatal(err)
		}
		var pauses, resumes []time.Duration
		for i := 0; i < 5; i++ {
			t0 := time.Now()
			if _, err := a.c.Pause(ctx, name); err != nil {
				t.Fatal(err)
			}
			t1 := time.Now()
			if _, err := a.c.Resume(ctx, name); err != nil {
				t.Fatal(err)
			}
			pauses, resumes = append(pauses, t1.Sub(t0)), append(resumes, time.Since(t1))
		}
		t.Logf("%d vCPU(s): pause over the API %s, resume %s (sandbox; request round trip included)", cpus, pct(pauses), pct(resumes))
	}
	var infos []time.Duration
	n := 1000
	if raceEnabled {
		n = 50 // the figures are for the plain binary
	}
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := a.c.VM(ctx, "lat1"); err != nil {
			t.Fatal(err)
		}
		infos = append(infos, time.Since(t0))
	}
	t.Logf("GET /vms/lat1: %s (sandbox, race detector %v)", pct(infos), raceEnabled)
	for _, name := range []string{"lat1", "lat2"} {
		if err := a.c.Delete(ctx, name, true); err != nil {
			t.Fatal(err)
		}
	}

	var done atomic.Bool
	var refused, served atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	readerErr := func(err error) {
		if err == nil {
			served.Add(1)
			return
		}
		if client.IsNotFound(err) || client.IsConflict(err) {
			refused.Add(1)
			return
		}
		select {
		case errs <- err:
		default:
		}
	}
	// 100 clients; 20 under the race detector, which makes every request
	// ~10x dearer (100 took the -race run in the sandbox to 464 s).
	clients := 100
	if raceEnabled {
		clients = 20
	}
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			for !done.Load() {
				name := fmt.Sprintf("v%d", r.IntN(4))
				var err error
				switch r.IntN(6) {
				case 0:
					_, err = a.c.VMs(ctx)
				case 1:
					_, err = a.c.VM(ctx, name)
				case 2:
					_, err = a.c.Counters(ctx, name)
				case 3:
					_, err = a.c.Metrics(ctx)
				case 4:
					_, err = a.c.Sched(ctx)
				case 5:
					_, err = a.c.Switches(ctx)
				}
				readerErr(err)
				// A hundred clients, not a hundred busy loops: the
				// sandbox has one emulated CPU.
				pause := 10 + r.IntN(40)
				if raceEnabled {
					pause *= 4
				}
				time.Sleep(time.Duration(pause) * time.Millisecond)
			}
		}()
	}
	// The driver: VMs come and go, two at a time, while the readers read.
	for round := 0; round < 4; round++ {
		for j := 0; j < 2; j++ {
			name := fmt.Sprintf("v%d", (round*2+j)%4)
			if _, err := a.c.CreateVM(ctx, api.VMSpec{Name: name, Kernel: kernel, Mem: "64M", NICs: []api.NICSpec{{}}}, true); err != nil {
				t.Fatalf("round %d: create %s: %v", round, name, err)
			}
		}
		for j := 0; j < 2; j++ {
			name := fmt.Sprintf("v%d", (round*2+j)%4)
			if _, err := a.c.Pause(ctx, name); err != nil {
				t.Fatalf("pause %s: %v", name, err)
			}
			if _, err := a.c.Pause(ctx, name); !client.IsConflict(err) {
				t.Fatalf("pause of paused %s: %v", name, err)
			}
			if _, err := a.c.Resume(ctx, name); err != nil {
				t.Fatalf("resume %s: %v", name, err)
			}
			if round%2 == 0 {
				v, err := a.c.Stop(ctx, name, api.Stop{Force: j == 0})
				if err != nil || v.State != "stopped" || v.Exit == nil || v.Exit.Status != 137 {
					t.Fatalf("stop %s: %+v %v", name, v, err)
				}
				if err := a.c.Delete(ctx, name, false); err != nil {
					t.Fatalf("delete %s: %v", name, err)
				}
			} else if err := a.c.Delete(ctx, name, true); err != nil {
				t.Fatalf("delete %s with force: %v", name, err)
			}
		}
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a reader got: %v", err)
	}
	t.Logf("readers: %d answers, %d refused (404/409)", served.Load(), refused.Load())
	if served.Load() < 100 {
		t.Errorf("only %d reads were served", served.Load())
	}
	if vms, err := a.c.VMs(ctx); err != nil || len(vms) != 0 {
		t.Fatalf("VMs left: %v %v", vms, err)
	}
	a.stop(t)
	if g := settle(g0); g > g0+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after:\n%s", g0, g, buf[:runtime.Stack(buf, true)])
	}
	if fd := openFDs(t); fd > fd0 {
		t.Errorf("%d fds before, %d after", fd0, fd)
	}
}

// pct formats the p50 and p99 of ds.
func pct(ds []time.Duration) string {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return fmt.Sprintf("p50 %v p99 %v (n=%d)", at(0.5).Round(time.Microsecond), at(0.99).Round(time.Microsecond), len(s))
}
