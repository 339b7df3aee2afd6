package vmm

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/colibrivm/colibri/kvm"
	"github.com/colibrivm/colibri/vmm/boot"
	"github.com/colibrivm/colibri/vmm/cpuid"
	"golang.org/x/sys/unix"
)

// Control word bits a vCPU thread checks whenever KVM_RUN returns.
const (
	ctlStop uint32 = 1 << iota
	ctlPark
)

// VCPU is one virtual CPU and the OS thread that runs it. Its control
// methods (Kick, Park, Unpark, SetAffinity, TID) are what a scheduler uses,
// and are safe from any goroutine.
type VCPU struct {
	id  int
	vm  *VM
	cpu *kvm.VCPU

	tid     atomic.Int32
	control atomic.Uint32
	// parked is the futex word the thread sleeps on while parked: 1 while
	// a park is requested and not yet released.
	parked uint32
	// running is 1 while the thread is in KVM_RUN or about to enter it,
	// 0 while parked or stopped.
	running atomic.Uint32

	exits [kvm.NumExitReasons]atomic.Uint64
	// kstats are KVM's counters, read when the vCPU stops.
	kstats map[string]uint64
	kicks  atomic.Uint64
	parks  atomic.Uint64

	ready chan error
	done  chan struct{}
	err   error
}

// ID returns the vCPU index (its APIC id).
func (c *VCPU) ID() int { return c.id }

// TID returns the OS thread id that runs the vCPU (0 before it started).
func (c *VCPU) TID() int { return int(c.tid.Load()) }

// Kick makes the vCPU leave KVM_RUN as soon as possible: it sets
// immediate_exit, so a KVM_RUN about to start returns at once, and signals
// the thread, so one in progress returns with EINTR.
func (c *VCPU) Kick() error {
	tid := c.TID()
	if tid == 0 || c.cpu == nil {
		return errors.New("vCPU not running")
	}
	c.kicks.Add(1)
	c.cpu.SetImmediateExit(true)
	if err := unix.Tgkill(unix.Getpid(), tid, kvm.KickSignal); err != nil && err != unix.ESRCH {
		return fmt.Errorf("kicking vCPU %d (tid %d): %w", c.id, tid, err)
	}
	return nil
}

// Park asks the vCPU to leave guest mode and wait until Unpark. It returns
// once the request is made; the thread parks within one kick.
func (c *VCPU) Park() error {
	atomic.StoreUint32(&c.parked, 1)
	c.control.Or(ctlPark)
	return c.Kick()
}

// Unpark lets a parked vCPU run again.
func (c *VCPU) Unpark() error {
	c.control.And(^ctlPark)
	atomic.StoreUint32(&c.parked, 0)
	futexWake(&c.parked)
	return nil
}

// Running reports whether the vCPU thread is in (or entering) guest mode.
func (c *VCPU) Running() bool { return c.running.Load() == 1 }

// SetAffinity pins the vCPU thread to the given host CPUs.
func (c *VCPU) SetAffinity(cpus []int) error {
	tid := c.TID()
	if tid == 0 {
		return errors.New("vCPU not running")
	}
	var set unix.CPUSet
	for _, cpu := range cpus {
		set.Set(cpu)
	}
	if err := unix.SchedSetaffinity(tid, &set); err != nil {
		return fmt.Errorf("setting affinity of vCPU %d (tid %d) to %v: %w", c.id, tid, cpus, err)
	}
	return nil
}

// Exits returns the number of exits to userspace by reason.
func (c *VCPU) Exits() map[kvm.ExitReason]uint64 {
	out := map[kvm.ExitReason]uint64{}
	for i := range c.exits {
		if n := c.exits[i].Load(); n > 0 {
			out[kvm.ExitReason(i)] = n
		}
	}
	return out
}

func (c *VCPU) stop() {
	c.control.Or(ctlStop)
	c.Unpark()
	c.Kick()
}

// run is the vCPU thread: it creates the vCPU on its own locked OS thread,
// sets it up and loops on KVM_RUN until the VM stops. It never unlocks the
// thread: the thread dies with the goroutine, taking any state KVM or the
// signal mask left on it.
func (c *VCPU) run(setup func(*kvm.VCPU) error) {
	runtime.LockOSThread()
	defer close(c.done)
	c.tid.Store(int32(unix.Gettid()))
	cpu, err := c.vm.kvm.CreateVCPU(c.id)
	if err == nil {
		err = setup(cpu)
		if err != nil {
			cpu.Close()
		}
	}
	if err != nil {
		c.ready <- fmt.Errorf("setting up vCPU %d: %w", c.id, err)
		return
	}
	c.cpu = cpu
	c.ready <- nil
	c.err = c.loop()
	c.kstats = readKVMStats(cpu)
	cpu.Close()
}

func (c *VCPU) loop() error {
	c.running.Store(1)
	defer c.running.Store(0)
	for {
		reason, err := c.cpu.Run()
		if err != nil {
			c.vm.stop(ExitError, err)
			return err
		}
		if int(reason) < len(c.exits) {
			c.exits[reason].Add(1)
		}
		switch reason {
		case kvm.ExitIO:
			io, err := c.cpu.IO()
			if err != nil {
				c.vm.stop(ExitError, err)
				return err
			}
			for i := 0; i < io.Count; i++ {
				d := io.Data[i*io.Size : (i+1)*io.Size]
				if io.Out {
					c.vm.pio.write(io.Port, d)
				} else {
					c.vm.pio.read(io.Port, d)
				}
			}
		case kvm.ExitMMIO:
			m := c.cpu.MMIO()
			if m.Write {
				c.vm.mmioWrite(m.Addr, m.Data)
			} else {
				c.vm.mmioRead(m.Addr, m.Data)
			}
		case kvm.ExitIntr:
			c.cpu.SetImmediateExit(false)
		case kvm.ExitHLT:
			// Only without an in-kernel LAPIC; nothing to do but go on.
		case kvm.ExitShutdown:
			c.vm.stop(ExitReset, nil)
		case kvm.ExitSystemEvent:
			switch c.cpu.SystemEvent() {
			case kvm.SystemEventReset:
				c.vm.stop(ExitReset, nil)
			case kvm.SystemEventCrash:
				c.vm.stop(ExitError, fmt.Errorf("vCPU %d: guest crash event", c.id))
			default:
				c.vm.stop(ExitPowerOff, nil)
			}
		case kvm.ExitFailEntry:
			err := fmt.Errorf("vCPU %d: KVM_EXIT_FAIL_ENTRY, hardware reason %#x", c.id, c.cpu.FailEntryReason())
			c.vm.stop(ExitError, err)
			return err
		case kvm.ExitInternalError:
			err := fmt.Errorf("vCPU %d: KVM_EXIT_INTERNAL_ERROR, suberror %d%s", c.id, c.cpu.InternalError(), c.where())
			c.vm.stop(ExitError, err)
			return err
		default:
			err := fmt.Errorf("vCPU %d: unexpected exit %v%s", c.id, reason, c.where())
			c.vm.stop(ExitError, err)
			return err
		}
		if ctl := c.control.Load(); ctl != 0 {
			if ctl&ctlStop != 0 {
				return nil
			}
			if ctl&ctlPark != 0 {
				c.park()
			}
		}
	}
}

// park blocks the thread until Unpark (or stop).
func (c *VCPU) park() {
	c.parks.Add(1)
	c.running.Store(0)
	for atomic.LoadUint32(&c.parked) == 1 && c.control.Load()&ctlStop == 0 {
		futexWait(&c.parked, 1)
	}
	c.running.Store(1)
}

func (c *VCPU) where() string {
	r, err := c.cpu.Regs()
	if err != nil {
		return ""
	}
	return fmt.Sprintf(" at rip %#x", r.RIP)
}

// setupVCPU programs CPUID, MSRs, FPU and LAPIC; the boot vCPU also gets the
// 64-bit entry state from the loader.
func (v *VM) setupVCPU(cpu *kvm.VCPU, regs *kvm.Regs) error {
	if err := cpu.SetCPUID(cpuid.ForVCPU(v.cpuid, cpu.ID(), v.cfg.CPUs)); err != nil {
		return err
	}
	for _, m := range bootMSRs() {
		// Not every host KVM knows every MSR; a refused one is not fatal.
		_ = cpu.SetMSRs([]kvm.MSR{m})
	}
	var fpu kvm.FPU
	fpu.FCW = 0x37f
	fpu.MXCSR = 0x1f80
	if err := cpu.SetFPU(fpu); err != nil {
		return err
	}
	lapic, err := cpu.LAPIC()
	if err != nil {
		return err
	}
	const lvtLINT0, lvtLINT1, modeExtINT, modeNMI = 0x350, 0x360, 0x700, 0x400
	putLAPIC(&lapic, lvtLINT0, modeExtINT)
	putLAPIC(&lapic, lvtLINT1, modeNMI)
	if err := cpu.SetLAPIC(lapic); err != nil {
		return err
	}
	if regs == nil {
		return nil // APs wait for INIT/SIPI in the kernel.
	}
	sregs, err := cpu.Sregs()
	if err != nil {
		return err
	}
	if err := cpu.SetSregs(boot.LongModeSregs(sregs)); err != nil {
		return err
	}
	return cpu.SetRegs(*regs)
}

func putLAPIC(l *kvm.LAPICState, off int, v uint32) {
	*(*uint32)(unsafe.Pointer(&l.Regs[off])) = v
}

// bootMSRs are the MSR values a freshly reset x86 CPU would have that the
// kernel expects firmware to have set.
func bootMSRs() []kvm.MSR {
	const (
		msrSysenterCS, msrSysenterESP, msrSysenterEIP = 0x174, 0x175, 0x176
		msrSTAR, msrLSTAR, msrCSTAR, msrSyscallMask   = 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084
		msrKernelGSBase                               = 0xc0000102
		msrMiscEnable                                 = 0x1a0
		msrMTRRDefType                                = 0x2ff
		miscFastString                                = 1
		mtrrEnableWB                                  = 1<<11 | 6
	)
	return []kvm.MSR{
		{Index: msrSysenterCS}, {Index: msrSysenterESP}, {Index: msrSysenterEIP},
		{Index: msrSTAR}, {Index: msrLSTAR}, {Index: msrCSTAR}, {Index: msrSyscallMask},
		{Index: msrKernelGSBase},
		{Index: msrMiscEnable, Data: miscFastString},
		{Index: msrMTRRDefType, Data: mtrrEnableWB},
	}
}

func futexWait(addr *uint32, val uint32) {
	const futexWaitPrivate = 0 | 128
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitPrivate, uintptr(val), 0, 0, 0)
}

func futexWake(addr *uint32) {
	const futexWakePrivate = 1 | 128
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakePrivate, 1<<30, 0, 0, 0)
}
