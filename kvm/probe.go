package kvm

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// KickSignal is the real-time signal colibri sends a vCPU thread to make
// KVM_RUN return. Go reserves signals 32–34; it ignores a signal nobody
// asked for with signal.Notify, which is exactly what a kick needs.
const KickSignal = unix.Signal(35 + 5)

// Probe checks that this KVM can run an ordinary x86 guest natively: it runs
// a real-mode loop of a few thousand instructions that ends in an I/O port
// write, and then checks KVM's insn_emulation counter. Some hosts have a
// /dev/kvm that cannot run stock guests at speed (PVM, for instance, runs
// only guests built for it and emulates everything else instruction by
// instruction).
func (s *System) Probe(timeout time.Duration) error {
	vm, err := s.CreateVM()
	if err != nil {
		return err
	}
	defer vm.Close()
	mem, err := unix.Mmap(-1, 0, 0x2000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("probe memory: %w", err)
	}
	defer unix.Munmap(mem)
	// mov cx, probeLoops; l: dec cx; jnz l; mov al, 0x42; out 0x10, al; hlt
	copy(mem[0x1000:], []byte{0xb9, probeLoops & 0xff, probeLoops >> 8, 0x49, 0x75, 0xfd, 0xb0, 0x42, 0xe6, 0x10, 0xf4})
	if err := vm.SetUserMemoryRegion(0, 0, uint64(len(mem)), hostAddr(mem)); err != nil {
		return err
	}
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		return err
	}

	type result struct {
		err error
	}
	done := make(chan result, 1)
	tids := make(chan int, 1)
	var timedOut atomic.Bool
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tids <- unix.Gettid()
		done <- result{probeRun(vm, &timedOut)}
	}()
	tid := <-tids
	select {
	case r := <-done:
		return r.err
	case <-time.After(timeout):
		// Kick the thread out of KVM_RUN and wait for it.
		timedOut.Store(true)
		for i := 0; ; i++ {
			unix.Tgkill(unix.Getpid(), tid, KickSignal)
			select {
			case <-done:
				return fmt.Errorf("probe guest did not reach its port write within %v", timeout)
			case <-time.After(10 * time.Millisecond):
			}
			if i > 500 {
				return fmt.Errorf("probe vCPU stuck in KVM_RUN")
			}
		}
	}
}

// probeLoops is how many times the probe guest loops (two instructions
// each); a KVM that emulates more than maxEmulated of them is not running
// guests natively.
const (
	probeLoops  = 2000
	maxEmulated = 200
)

// probeRun runs the probe guest to its port write. KVM_RUN returns early
// for any signal the thread takes (not only the timeout's kick: CI saw
// one); it is entered again until timedOut is set.
func probeRun(vm *VM, timedOut *atomic.Bool) error {
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		return err
	}
	defer cpu.Close()
	sregs, err := cpu.Sregs()
	if err != nil {
		return err
	}
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	if err := cpu.SetSregs(sregs); err != nil {
		return err
	}
	if err := cpu.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		return err
	}
	reason, err := cpu.Run()
	for err == nil && reason == ExitIntr && !timedOut.Load() {
		reason, err = cpu.Run()
	}
	if err != nil {
		return err
	}
	switch reason {
	case ExitIO:
		io, err := cpu.IO()
		if err != nil {
			return err
		}
		if io.Out && io.Port == 0x10 && len(io.Data) == 1 && io.Data[0] == 0x42 {
			return checkNative(cpu)
		}
		return fmt.Errorf("probe guest: unexpected port I/O %+v", io)
	case ExitIntr:
		return errors.New("probe vCPU interrupted by its timeout")
	}
	return fmt.Errorf("probe guest: unexpected exit %v", reason)
}

// checkNative fails if KVM emulated the probe's instructions one by one.
func checkNative(cpu *VCPU) error {
	all, err := cpu.ReadStats()
	if err != nil {
		return nil // no binary stats (old kernel): trust the run
	}
	if n := all["insn_emulation"]; n > maxEmulated {
		return fmt.Errorf("KVM emulated %d instructions of a %d-instruction real-mode loop: it cannot run stock guests natively (a PVM host?)", n, 2*probeLoops)
	}
	return nil
}
