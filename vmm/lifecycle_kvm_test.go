package vmm_test

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/internal/tinykernel"
	"github.com/colibrivm/colibri/vmm"
)

// tinyKernel writes code as a tiny kernel and returns its path.
func tinyKernel(t *testing.T, code []byte) string {
	t.Helper()
	path, err := tinykernel.Write(t.TempDir(), "tiny.elf", code)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func newTinyVM(t *testing.T, code []byte, cpus int) *vmm.VM {
	t.Helper()
	testenv.RequireKVM(t)
	vm, err := vmm.New(vmm.Config{Kernel: tinyKernel(t, code), CPUs: cpus, MemSize: 64 << 20})
	if err != nil {
		t.Fatalf("creating VM: %v", err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm
}

// runAsync runs vm and returns a channel that gets how it ended.
func runAsync(ctx context.Context, vm *vmm.VM) <-chan error {
	done := make(chan error, 1)
	go func() {
		kind, err := vm.Run(ctx)
		if err == nil {
			err = errors.New(kind.String())
		}
		done <- err
	}()
	return done
}

// TestKVMCrashWhileCreatingVCPUs: the boot vCPU triple-faults at its first
// instruction while the other vCPUs are still being created. Run must end
// (the vCPUs created after the stop must stop too: they used to wait for a
// SIPI forever) and report a crash, not a reset, with the guest's state.
func TestKVMCrashWhileCreatingVCPUs(t *testing.T) {
	for round := 0; round < 3; round++ {
		vm := newTinyVM(t, tinykernel.Crash, 8)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		kind, err := vm.Run(ctx)
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatalf("round %d: Run did not end within a minute of the crash", round)
		}
		if kind != vmm.ExitCrash || !kind.Failed() {
			t.Fatalf("round %d: VM ended as %v (%v), want crash", round, kind, err)
		}
		var ce *vmm.CrashError
		if !errors.As(err, &ce) {
			t.Fatalf("round %d: error %T %v is not a *CrashError", round, err, err)
		}
		// Intel keeps the crashing state; AMD resets the vCPU first.
		if ce.VCPU != 0 || !ce.StateLost && (ce.RIP < 0x10_0000 || ce.RIP > 0x10_1000 || ce.CR0&1 == 0) {
			t.Errorf("round %d: crash state %+v: want vCPU 0, rip in the kernel, protected mode", round, ce)
		}
		t.Logf("round %d: %v; %d vCPUs started", round, err, len(vm.VCPUs()))
	}
}

// TestKVMKickAfterExit: a scheduler may park, unpark and kick a vCPU at any
// moment, also while its VM powers off and after its thread has released
// kvm_run (which used to crash the process: Kick wrote the unmapped page).
func TestKVMKickAfterExit(t *testing.T) {
	vm := newTinyVM(t, tinykernel.PowerOff, 2)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var kicks atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-vm.Started()
		for !stop.Load() {
			for _, c := range vm.VCPUs() {
				_ = c.Park()
				_ = c.Kick()
				_ = c.Unpark()
				kicks.Add(1)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kind, err := vm.Run(ctx)
	// Keep hammering the ended vCPUs for a while.
	time.Sleep(50 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if kind != vmm.ExitPowerOff {
		t.Fatalf("VM ended as %v (%v), want power-off", kind, err)
	}
	for _, c := range vm.VCPUs() {
		if err := c.Kick(); err == nil {
			t.Errorf("Kick of vCPU %d after the VM ended succeeded", c.ID())
		}
		if err := c.Park(); err != nil {
			t.Errorf("Park of vCPU %d after the VM ended: %v", c.ID(), err)
		}
	}
	st := vm.Stats()
	t.Logf("%d park/kick/unpark rounds; %d kicks sent %d signals, %d KVM_EXIT_INTR", kicks.Load(), st.Kicks, st.KickSignals, st.UserExits["intr"])
	// Real-time signals queue: one per kick would bury the vCPU thread
	// (this test hung in the 1-CPU sandbox with the thread stuck in a
	// system call while the kicker spun). At most one is in flight.
	if max := st.UserExits["intr"] + uint64(len(vm.VCPUs())); st.KickSignals > max {
		t.Errorf("%d kick signals for %d KVM_EXIT_INTR exits: more than one in flight per vCPU", st.KickSignals, st.UserExits["intr"])
	}
}

// TestKVMPauseResume: a paused VM runs no guest code (its counter stops),
// and runs again after Resume; the scheduler's parks and the pause do not
// release each other; Stop works while paused.
func TestKVMPauseResume(t *testing.T) {
	vm := newTinyVM(t, tinykernel.Count, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := runAsync(ctx, vm)
	<-vm.Started()
	counter := func() uint64 {
		var b [8]byte
		if err := vm.Memory().Read(tinykernel.CounterAddr, b[:]); err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint64(b[:])
	}
	waitMoving := func(what string) {
		t.Helper()
		c0 := counter()
		deadline := time.Now().Add(30 * time.Second)
		for counter() == c0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the guest's counter did not move in 30 s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitMoving("before pausing")
	for round := 0; round < 3; round++ {
		t0 := time.Now()
		if err := vm.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		if !vm.Paused() {
			t.Fatal("Paused is false after Pause")
		}
		c0 := counter()
		// The scheduler unparking the vCPU must not end the pause.
		c := vm.VCPUs()[0]
		_ = c.Park()
		_ = c.Unpark()
		time.Sleep(200 * time.Millisecond)
		if c1 := counter(); c1 != c0 {
			t.Fatalf("round %d: counter moved from %d to %d while paused", round, c0, c1)
		}
		if c.Running() {
			t.Fatalf("round %d: vCPU running while paused", round)
		}
		if err := vm.Resume(); err != nil {
			t.Fatal(err)
		}
		waitMoving("after resume")
		t.Logf("round %d: pause took %v (sandbox)", round, took)
	}
	if err := vm.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	vm.Stop()
	select {
	case err := <-done:
		if err.Error() != vmm.ExitStopped.String() {
			t.Fatalf("VM stopped while paused ended as %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Stop of a paused VM did not end it")
	}
	if err := vm.Pause(ctx); err == nil {
		t.Error("Pause of an ended VM succeeded")
	}
	if st := vm.Stats(); st.Pauses != 4 {
		t.Errorf("Stats.Pauses = %d, want 4", st.Pauses)
	}
}

// TestKVMSampleRIPs: a vCPU asked where it is answers with an address in
// the loop the guest spins in, and a paused one does not answer.
func TestKVMSampleRIPs(t *testing.T) {
	vm := newTinyVM(t, tinykernel.Count, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := runAsync(ctx, vm)
	<-vm.Started()
	// Count is an 8-byte increment and a 2-byte jump, entered at the
	// first byte after the ELF and program headers at 1 MiB.
	const entry = 0x10_0000 + 64 + 56
	for i := 0; i < 3; i++ {
		rips := vm.SampleRIPs(30 * time.Second)
		if len(rips) != 1 || (rips[0] != entry && rips[0] != entry+8) {
			t.Fatalf("sample %d: %#x, want [%#x] or [%#x]", i, rips, entry, entry+8)
		}
	}
	if err := vm.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if rips := vm.SampleRIPs(50 * time.Millisecond); len(rips) != 1 || rips[0] != 0 {
		t.Errorf("a paused vCPU answered %#x", rips)
	}
	vm.Stop()
	if err := <-done; err.Error() != vmm.ExitStopped.String() {
		t.Fatalf("VM ended as %v", err)
	}
}
