package host_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/internal/tinykernel"
	"github.com/colibrivm/colibri/vmm"
)

// eventLog records a host's events.
type eventLog struct {
	mu  sync.Mutex
	evs []host.Event
}

func (l *eventLog) follow(s *host.Subscription) {
	for ev := range s.C() {
		l.mu.Lock()
		l.evs = append(l.evs, ev)
		l.mu.Unlock()
	}
}

// states returns the states vm went through, in order.
func (l *eventLog) states(vm string) []host.State {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []host.State
	for _, ev := range l.evs {
		if ev.VM == vm && ev.Type == host.EventState {
			out = append(out, ev.State)
		}
	}
	return out
}

func (l *eventLog) count(vm string, typ host.EventType) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.evs {
		if ev.VM == vm && ev.Type == typ {
			n++
		}
	}
	return n
}

func equalStates(a, b []host.State) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// counter reads a tiny Count kernel's counter in v's guest memory.
func counter(t *testing.T, v *host.VM) uint64 {
	t.Helper()
	var b [8]byte
	if err := v.ReadGuest(tinykernel.CounterAddr, b[:]); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

func waitMoving(t *testing.T, v *host.VM, what string) {
	t.Helper()
	c0 := counter(t, v)
	deadline := time.Now().Add(30 * time.Second)
	for counter(t, v) == c0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: VM %s's counter did not move in 30 s", what, v.Name())
		}
		time.Sleep(time.Millisecond)
	}
}

func waitState(t *testing.T, v *host.VM, want host.State) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for v.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("VM %s is %s after a minute, want %s", v.Name(), v.State(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKVMHostLifecycle drives VMs with tiny kernels through their whole
// life on one host while others run: create, start, pause (its guest's
// counter stops, the other's goes on), resume, a live policy change, a
// graceful stop the guest ignores (forced after the timeout), a forced
// stop, delete, a guest that powers off, one that crash-loops; refused
// operations; and a Close that leaves no goroutine or fd behind. Its
// test binary is also run with -race (make test).
func TestKVMHostLifecycle(t *testing.T) {
	testenv.RequireKVM(t)
	dir := t.TempDir()
	kernels := map[string]string{}
	for name, code := range map[string][]byte{"count": tinykernel.Count, "off": tinykernel.PowerOff, "crash": tinykernel.Crash} {
		p, err := tinykernel.Write(dir, name, code)
		if err != nil {
			t.Fatal(err)
		}
		kernels[name] = p
	}
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	h, err := host.New(context.Background(), host.Config{
		Spec:        spec.File{Switches: []spec.Switch{{Name: "sw0"}}},
		Scheduler:   true,
		StopTimeout: 2 * time.Second,
		Logger:      testLogger(t, slog.LevelWarn),
	})
	if err != nil {
		t.Fatal(err)
	}
	var log eventLog
	sub := h.Subscribe()
	followed := make(chan struct{})
	go func() { defer close(followed); log.follow(sub) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	mk := func(name, kernel string, mod func(*spec.VM)) *host.VM {
		s := spec.VM{Name: name, Kernel: kernels[kernel], Mem: 64 << 20, NICs: []spec.NIC{{}}}
		if mod != nil {
			mod(&s)
		}
		v, err := h.CreateVM(s)
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return v
	}
	a := mk("a", "count", nil)
	// Both batch: under central an LC vCPU that never sleeps would keep a
	// batch one parked for good, as it should.
	b := mk("b", "count", nil)
	if _, err := h.CreateVM(spec.VM{Name: "a", Kernel: kernels["count"]}); !errors.Is(err, host.ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	if err := a.Pause(ctx); !errors.Is(err, host.ErrState) {
		t.Fatalf("pause of a created VM: %v", err)
	}
	for _, v := range []*host.VM{a, b} {
		if err := v.Start(); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Start(); !errors.Is(err, host.ErrState) {
		t.Fatalf("second start: %v", err)
	}
	waitMoving(t, a, "a started")
	waitMoving(t, b, "b started")
	info := a.Info()
	if len(info.VCPUs) != 1 || info.VCPUs[0].TID == 0 || len(info.NICs) != 1 || info.NICs[0].Port != "a/eth0" {
		t.Fatalf("info of a: %+v", info)
	}
	bTID := b.Info().VCPUs[0].TID
	// The vCPUs register with the scheduler once their threads run.
	for deadline := time.Now().Add(30 * time.Second); h.SchedInfo().VCPUs != 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if si := h.SchedInfo(); !si.Enabled || si.VCPUs != 2 || si.Policy.Name != "linux" {
		t.Fatalf("sched info: %+v", si)
	}

	// Pause a: its counter stops, b's goes on; resume.
	for round := 0; round < 2; round++ {
		t0 := time.Now()
		if err := a.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("pause %d took %v (sandbox)", round, time.Since(t0))
		if a.State() != host.StatePaused || !a.Info().NICs[0].Paused {
			t.Fatalf("after Pause: state %s, NIC %+v", a.State(), a.Info().NICs[0])
		}
		c0 := counter(t, a)
		waitMoving(t, b, "b while a is paused")
		time.Sleep(100 * time.Millisecond)
		if c1 := counter(t, a); c1 != c0 {
			t.Fatalf("a's counter moved from %d to %d while paused", c0, c1)
		}
		if err := a.Pause(ctx); !errors.Is(err, host.ErrState) {
			t.Fatalf("pause of a paused VM: %v", err)
		}
		if err := a.Resume(); err != nil {
			t.Fatal(err)
		}
		waitMoving(t, a, "a resumed")
	}

	// The policy changes live while both run.
	for _, p := range []host.PolicySpec{{Name: "pinned"}, {Name: "central", Threshold: time.Millisecond}, {Name: "linux"}} {
		if err := h.SetPolicy(p); err != nil {
			t.Fatalf("set policy %s: %v", p.Name, err)
		}
		waitMoving(t, a, "a under "+p.Name)
		waitMoving(t, b, "b under "+p.Name)
	}
	if err := h.SetPolicy(host.PolicySpec{Name: "pinned", Quantum: time.Millisecond}); err == nil {
		t.Fatal("pinned with a quantum accepted")
	}

	// b ignores its power button: the graceful stop is forced after 2 s.
	if err := h.Delete("b", false); !errors.Is(err, host.ErrState) {
		t.Fatalf("delete of a running VM: %v", err)
	}
	t0 := time.Now()
	if err := b.Stop(ctx, host.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	exit, err := b.Wait(ctx)
	if err != nil || exit.Kind != vmm.ExitStopped || !exit.Forced || exit.Status() != 137 || time.Since(t0) < 2*time.Second {
		t.Fatalf("b: exit %+v (%v) after %v", exit, err, time.Since(t0))
	}
	if err := b.Pause(ctx); !errors.Is(err, host.ErrState) {
		t.Fatalf("pause of a stopped VM: %v", err)
	}
	waitMoving(t, a, "a after b stopped")
	if err := h.Delete("b", false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.VM("b"); !errors.Is(err, host.ErrNotFound) {
		t.Fatalf("b after delete: %v", err)
	}
	// Nothing of b is left: its vCPU thread, its port.
	// The runtime ends a locked thread after its goroutine has returned,
	// a moment after Delete: give it a few seconds.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", bTID)); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("b's vCPU thread %d is still alive 5s after b was deleted", bTID)
			break
		}
	}
	for _, sw := range h.Stats().Netstack.Switches {
		for _, p := range sw.Ports {
			if strings.HasPrefix(p.Name, "b/") {
				t.Errorf("port %s/%s is still there after b was deleted", sw.Name, p.Name)
			}
		}
	}

	// c powers off by itself; d crashes at once and restarts until the
	// host gives up on it.
	c := mk("c", "off", nil)
	d := mk("d", "crash", func(s *spec.VM) { s.OnCrash = spec.ActionRestart })
	for _, v := range []*host.VM{c, d} {
		if err := v.Start(); err != nil {
			t.Fatal(err)
		}
	}
	if exit, err := c.Wait(ctx); err != nil || exit.Kind != vmm.ExitPowerOff || exit.Status() != 0 {
		t.Fatalf("c: %+v %v", exit, err)
	}
	exit, err = d.Wait(ctx)
	if err != nil || !exit.Kind.Failed() || d.State() != host.StateFailed || d.Info().Restarts != 5 {
		t.Fatalf("d: exit %+v (%v), state %s, %d restarts", exit, err, d.State(), d.Info().Restarts)
	}
	t.Logf("d: %v", exit.Err)
	// A failed VM starts again on request.
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, host.StateFailed)

	// a: forced stop of a paused VM, then delete with force of a running
	// one, all while a new VM comes and goes.
	if err := a.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(ctx, host.StopOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	waitMoving(t, a, "a restarted")
	if err := h.Delete("a", true); err != nil {
		t.Fatal(err)
	}

	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	<-followed
	if got, want := log.states("a"), []host.State{"running", "paused", "running", "paused", "running", "paused", "stopping", "stopped", "running", "stopping", "stopped"}; !equalStates(got, want) {
		t.Errorf("a went through %v, want %v", got, want)
	}
	if got, want := log.states("b"), []host.State{"running", "stopping", "stopped"}; !equalStates(got, want) {
		t.Errorf("b went through %v, want %v", got, want)
	}
	if n := log.count("d", host.EventRestarted); n != 10 {
		t.Errorf("d restarted %d times, want 10", n)
	}
	for _, vm := range []string{"a", "b", "c", "d"} {
		if log.count(vm, host.EventCreated) != 1 || log.count(vm, host.EventDeleted) != 1 {
			t.Errorf("VM %s: %d created and %d deleted events, want 1 each", vm, log.count(vm, host.EventCreated), log.count(vm, host.EventDeleted))
		}
	}
	if g := settle(g0); g > g0 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before the host, %d after it closed:\n%s", g0, g, buf[:runtime.Stack(buf, true)])
	}
	if fd := openFDs(t); fd != fd0 {
		t.Errorf("%d fds before the host, %d after it closed", fd0, fd)
	}
}
