package host_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// testLogger returns a logger writing records of level and above to t's
// output (shown with -v or when t fails).
func testLogger(t *testing.T, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// settle waits for goroutines that are ending to end, and returns how
// many are left.
func settle(limit int) int {
	n := runtime.NumGoroutine()
	for i := 0; i < 100 && n > limit; i++ {
		time.Sleep(10 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}

// TestHostRefusesBadVMs: what CreateVM checks before it touches KVM, with
// the errors a caller matches on, and a host that stays as it was.
func TestHostRefusesBadVMs(t *testing.T) {
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	h, err := host.New(context.Background(), host.Config{Spec: spec.File{Switches: []spec.Switch{{Name: "sw0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		vm   spec.VM
		want string
	}{
		{spec.VM{Name: "a", NICs: []spec.NIC{{Switch: "nope"}}}, `nics[0].switch: no switch named "nope" (have sw0)`},
		{spec.VM{Name: "Bad"}, "name: "},
		{spec.VM{Name: "a", CPUs: 1000}, "cpus: 1000: must be from 1 to 255"},
		{spec.VM{Name: "a", OnCrash: "explode"}, `on_crash: "explode": use stop or restart`},
	} {
		_, err := h.CreateVM(tc.vm)
		var se *spec.Error
		if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreateVM(%+v): %v, want a *spec.Error with %q", tc.vm, err, tc.want)
		}
	}
	// A VM that passes the checks but cannot be created (no kernel) leaves
	// no trace: its name and MAC are free again.
	_, err = h.CreateVM(spec.VM{Name: "a", NICs: []spec.NIC{{}}})
	if err == nil || !strings.Contains(err.Error(), "no kernel") {
		t.Fatalf("CreateVM without a kernel: %v", err)
	}
	if vms := h.VMs(); len(vms) != 0 {
		t.Fatalf("a failed CreateVM left %d VMs", len(vms))
	}
	if f := h.Spec(); len(f.VMs) != 0 {
		t.Fatalf("a failed CreateVM left its spec: %+v", f.VMs)
	}
	if _, err := h.VM("a"); !errors.Is(err, host.ErrNotFound) {
		t.Fatalf("VM(a): %v, want ErrNotFound", err)
	}
	if err := h.Delete("a", false); !errors.Is(err, host.ErrNotFound) {
		t.Fatalf("Delete(a): %v, want ErrNotFound", err)
	}
	if err := h.SetPolicy(host.PolicySpec{Name: "central"}); !errors.Is(err, host.ErrUnsupported) {
		t.Fatalf("SetPolicy without a scheduler: %v", err)
	}
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.CreateVM(spec.VM{Name: "b"}); !errors.Is(err, host.ErrClosed) {
		t.Fatalf("CreateVM after Close: %v", err)
	}
	if err := h.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if g := settle(g0); g > g0 {
		t.Errorf("%d goroutines before the host, %d after it closed", g0, g)
	}
	if fd := openFDs(t); fd != fd0 {
		t.Errorf("%d fds before the host, %d after it closed", fd0, fd)
	}
}

func TestHostRefusesBadSettings(t *testing.T) {
	for _, tc := range []struct {
		file spec.File
		want string
	}{
		{spec.File{Pollers: spec.Pollers{Cores: []int{4000}}}, "pollers.cores[0]: core 4000 is beyond 1023"},
		{spec.File{Sched: spec.Sched{Policy: "fifo"}}, "sched.policy"},
		{spec.File{Switches: []spec.Switch{{Name: "a"}, {Name: "a"}}}, `switches[1].name: duplicate "a"`},
		{spec.File{Pollers: spec.Pollers{Cores: []int{1000}}}, "CPU 1000 is not available"},
	} {
		h, err := host.New(context.Background(), host.Config{Spec: tc.file})
		if err == nil {
			h.Close(context.Background())
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want %q", tc.file, err, tc.want)
		}
	}
}
