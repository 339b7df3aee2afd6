package vmm_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/vmm"
)

const (
	// shuttingDown is the one line the default initrd prints on a press.
	shuttingDown = "colibri-guest: power button: shutting down"
	// Bounds, generous for the sandbox (30-50x slower than metal).
	bannerTimeout   = 3 * time.Minute
	powerOffTimeout = 60 * time.Second
)

// runResult is what Run returned.
type runResult struct {
	kind vmm.ExitKind
	err  error
}

// startGuest boots the default images with colibri.run="sleep 600", so
// the guest only ends if something ends it, and returns the VM, its
// console and the channel Run's result arrives on. extra goes on the
// kernel command line.
func startGuest(t *testing.T, extra string) (*vmm.VM, *testenv.Buffer, <-chan runResult) {
	t.Helper()
	images := testenv.Images(t)
	console := &testenv.Buffer{}
	vm, err := vmm.New(vmm.Config{
		Kernel:  filepath.Join(images, "vmlinux"),
		Initrd:  filepath.Join(images, "initrd.img"),
		Cmdline: `console=ttyS0 panic=-1 colibri.run="sleep 600" ` + extra,
		CPUs:    1,
		MemSize: 256 << 20,
		Console: console,
	})
	if err != nil {
		t.Fatalf("creating VM: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bannerTimeout+2*powerOffTimeout)
	done := make(chan runResult, 1)
	go func() {
		kind, err := vm.Run(ctx)
		done <- runResult{kind, err}
	}()
	t.Cleanup(func() {
		vm.Stop()
		cancel()
		<-vm.Done()
		t.Logf("guest console:\n%s", console.String())
		t.Logf("stats:\n%s", vm.Stats().Format())
	})
	select {
	case <-vm.Started():
	case <-vm.Done():
		t.Fatal("the VM stopped before its vCPUs started")
	}
	return vm, console, done
}

// waitBanner waits for the guest's banner line, failing t if the VM ends
// or bannerTimeout passes first.
func waitBanner(t *testing.T, vm *vmm.VM, console *testenv.Buffer) {
	t.Helper()
	deadline := time.Now().Add(bannerTimeout)
	for !strings.Contains(console.String(), "colibri-guest: up:") {
		select {
		case <-vm.Done():
			t.Fatal("the VM stopped before the guest's banner")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no banner after %v", bannerTimeout)
		}
	}
}

// pressAndExpectPowerOff presses the button and requires the guest to
// print its line and power off within powerOffTimeout.
func pressAndExpectPowerOff(t *testing.T, vm *vmm.VM, console *testenv.Buffer, done <-chan runResult) {
	t.Helper()
	pressed := time.Now()
	if err := vm.PowerButton(); err != nil {
		t.Fatalf("PowerButton: %v", err)
	}
	select {
	case r := <-done:
		t.Logf("press to end of Run: %v (sandbox times are 30-50x metal)", time.Since(pressed).Round(time.Millisecond))
		if r.err != nil || r.kind != vmm.ExitPowerOff {
			t.Errorf("VM ended with %v (%v), want power-off", r.kind, r.err)
		}
	case <-time.After(powerOffTimeout):
		t.Fatalf("the guest did not power off within %v of the press", powerOffTimeout)
	}
	out := console.String()
	if n := strings.Count(out, shuttingDown); n != 1 {
		t.Errorf("console has %q %d times, want once", shuttingDown, n)
	}
	// The press ended the guest, not init's own path after its command.
	for _, bad := range []string{"colibri-guest: exit status", "colibri-guest: powering off", "colibri-guest: warning"} {
		if strings.Contains(out, bad) {
			t.Errorf("console has %q", bad)
		}
	}
	if err := vm.PowerButton(); !errors.Is(err, vmm.ErrVMStopped) {
		t.Errorf("PowerButton after the VM stopped: %v, want ErrVMStopped", err)
	}
}

// TestKVMPowerButton: a press after the banner shuts the default guest
// down cleanly (its init runs acpid before printing the banner).
func TestKVMPowerButton(t *testing.T) {
	testenv.RequireKVM(t)
	vm, console, done := startGuest(t, "quiet")
	waitBanner(t, vm, console)
	pressAndExpectPowerOff(t, vm, console, done)
}

// TestKVMPowerButtonEarly presses the button every 50 ms from the moment
// the vCPUs start until the kernel runs the guest's init (its "Run /init"
// line; this guest boots without quiet), before init loads the button
// driver: until the kernel's GED driver binds, the button's IOAPIC input
// is masked, and after that the guest has no handler for the Notify.
// Those presses are lost, not kept: the guest boots normally and keeps
// running, and one press after the banner still powers it off, which also
// shows the early presses left the line low (a line left high would
// swallow every later edge).
func TestKVMPowerButtonEarly(t *testing.T) {
	testenv.RequireKVM(t)
	vm, console, done := startGuest(t, "")
	const initStarts = "Run /init as init process"
	presses := 0
	for !strings.Contains(console.String(), initStarts) {
		select {
		case <-vm.Done():
			t.Fatalf("the VM stopped during boot after %d presses", presses)
		default:
		}
		if time.Duration(presses)*50*time.Millisecond > bannerTimeout {
			t.Fatalf("no %q after %d presses", initStarts, presses)
		}
		if err := vm.PowerButton(); err != nil {
			t.Fatalf("PowerButton during boot (press %d): %v", presses+1, err)
		}
		presses++
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d presses before the guest's init started", presses)
	if presses < 2 {
		t.Errorf("only %d presses before init: the test did not press during boot", presses)
	}
	waitBanner(t, vm, console)
	// The button driver bound the DSDT's \_SB.PWRB.
	if !strings.Contains(console.String(), "Power Button [PWRB]") {
		t.Error(`console lacks the button driver's "Power Button [PWRB]"`)
	}
	// Give a kept press time to act before declaring it lost.
	select {
	case r := <-done:
		t.Fatalf("the guest ended (%v, %v) after the banner without a new press", r.kind, r.err)
	case <-time.After(5 * time.Second):
	}
	if strings.Contains(console.String(), shuttingDown) {
		t.Fatal("a press made during boot was kept: the guest is shutting down")
	}
	pressAndExpectPowerOff(t, vm, console, done)
}
