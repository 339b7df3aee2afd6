package kvm_test

import (
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/kvm"
	"golang.org/x/sys/unix"
)

func TestKVMSystem(t *testing.T) {
	testenv.RequireKVM(t)
	sys, err := kvm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	if err := sys.Probe(5 * time.Second); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if n := sys.MaxVCPUs(); n < 2 {
		t.Errorf("max vCPUs %d", n)
	}
	ents, err := sys.SupportedCPUID()
	if err != nil || len(ents) < 10 {
		t.Fatalf("supported CPUID: %d entries, %v", len(ents), err)
	}
	msrs, err := sys.MSRIndexList()
	if err != nil || len(msrs) == 0 {
		t.Fatalf("MSR index list: %v", err)
	}
}

// spinVM returns a VM whose memory holds "jmp $" at 0x1000; everything is
// released when tb ends.
func spinVM(tb testing.TB) *kvm.VM {
	tb.Helper()
	testenv.RequireKVM(tb)
	sys, err := kvm.Open()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sys.Close() })
	vm, err := sys.CreateVM()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { vm.Close() })
	mem, err := unix.Mmap(-1, 0, 0x2000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Munmap(mem) })
	copy(mem[0x1000:], []byte{0xeb, 0xfe}) // jmp $
	if err := vm.SetUserMemoryRegion(0, 0, 0x2000, uintptr(unsafe.Pointer(&mem[0]))); err != nil {
		tb.Fatal(err)
	}
	vm.SetTSSAddr(0xfffbd000)
	return vm
}

// startReal points a fresh vCPU at the real-mode code at 0x1000.
func startReal(cpu *kvm.VCPU) {
	s, _ := cpu.Sregs()
	s.CS.Base, s.CS.Selector = 0, 0
	cpu.SetSregs(s)
	cpu.SetRegs(kvm.Regs{RIP: 0x1000, RFLAGS: 2})
}

// TestKVMKick runs a guest that spins forever and kicks it out of KVM_RUN
// from another goroutine, as the scheduler does.
func TestKVMKick(t *testing.T) {
	vm := spinVM(t)

	type started struct {
		cpu *kvm.VCPU
		tid int
	}
	ready := make(chan started, 1)
	exits := make(chan kvm.ExitReason, 4)
	go func() {
		runtime.LockOSThread()
		cpu, err := vm.CreateVCPU(0)
		if err != nil {
			t.Error(err)
			close(ready)
			return
		}
		defer cpu.Close()
		startReal(cpu)
		ready <- started{cpu, unix.Gettid()}
		for i := 0; i < 2; i++ {
			r, err := cpu.Run()
			if err != nil {
				t.Error(err)
				return
			}
			exits <- r
			cpu.SetImmediateExit(false)
		}
	}()
	s, ok := <-ready
	if !ok {
		t.Fatal("vCPU setup failed")
	}
	for round := 0; round < 2; round++ {
		time.Sleep(50 * time.Millisecond) // let it spin in the guest
		s.cpu.SetImmediateExit(true)
		if err := unix.Tgkill(unix.Getpid(), s.tid, kvm.KickSignal); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-exits:
			if r != kvm.ExitIntr {
				t.Fatalf("kick %d: exit %v, want intr", round, r)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("kick %d: the vCPU did not leave KVM_RUN", round)
		}
	}
}
