package vmm

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/colibrivm/colibri/internal/osthread"
	"github.com/colibrivm/colibri/internal/seccomp"
	"github.com/colibrivm/colibri/kvm"
	"github.com/colibrivm/colibri/vmm/boot"
	"github.com/colibrivm/colibri/vmm/cpuid"
	"golang.org/x/sys/unix"
)

// ctlStop is the control-word bit that ends a vCPU thread's loop.
const ctlStop uint32 = 1

// Reasons a vCPU thread is held out of guest mode: bits of VCPU.hold, the
// word the parked thread sleeps on.
const (
	// holdSched: the scheduler parked it (Park, until Unpark).
	holdSched uint32 = 1 << iota
	// holdPause: its VM is paused (until the VM resumes).
	holdPause
)

// errVCPUExited is Kick's error once the vCPU thread has left KVM_RUN for
// good (or before it started).
var errVCPUExited = errors.New("vCPU thread not running")

// VCPU is one virtual CPU and the OS thread that runs it. Its control
// methods (Kick, Park, Unpark, SetAffinity, TID) are what a scheduler uses,
// and are safe from any goroutine at any time, also after the VM ended.
type VCPU struct {
	id  int
	vm  *VM
	cpu *kvm.VCPU

	tid     atomic.Int32
	control atomic.Uint32
	// hold is the futex word the thread sleeps on while held out of
	// guest mode: a set of hold* bits. The thread runs when it is 0.
	hold uint32
	// running is 1 while the thread is in KVM_RUN or about to enter it,
	// 0 while held or stopped.
	running atomic.Uint32
	// live is true from the moment cpu is usable until the thread is
	// about to release it; kickers counts Kick calls in flight, which the
	// thread waits out before it unmaps kvm_run.
	live    atomic.Bool
	kickers atomic.Int32

	exits [kvm.NumExitReasons]atomic.Uint64
	// kstats reads KVM's counters of this vCPU; opened on the vCPU's
	// thread before it first runs, read from any goroutine.
	statsMu sync.Mutex
	kstats  *kvm.Stats
	// final are KVM's counters as the vCPU ended.
	final map[string]uint64

	kicks atomic.Uint64
	// signalled is set while a kick's signal is in flight: the thread
	// clears it when KVM_RUN returns for it (KVM_EXIT_INTR). Real-time
	// signals queue, so a kick per signal would let a busy kicker bury
	// the thread under signals it handles one by one.
	signalled  atomic.Bool
	signals    atomic.Uint64
	parks      atomic.Uint64
	clockCtrls atomic.Uint64
	// sampleWant numbers the requests for the thread's instruction
	// pointer (VM.SampleRIPs); the thread answers at its next exit with
	// rip, then sets ripFor to the request it answered. sampleDone is the
	// thread's own copy of ripFor.
	sampleWant, ripFor, rip atomic.Uint64
	sampleDone              uint64
	// lastExit is touched only by the vCPU thread.
	lastExit exitRecord

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
// the thread, so one in progress returns with EINTR; a kick while an
// earlier one's signal is still unanswered sends none (immediate_exit
// covers it). Once the thread has ended it does nothing and returns an
// error.
func (c *VCPU) Kick() error {
	c.kickers.Add(1)
	defer c.kickers.Add(-1)
	if !c.live.Load() {
		return errVCPUExited
	}
	c.kicks.Add(1)
	c.cpu.SetImmediateExit(true)
	if c.signalled.Swap(true) {
		return nil
	}
	c.signals.Add(1)
	if err := unix.Tgkill(unix.Getpid(), c.TID(), kvm.KickSignal); err != nil && err != unix.ESRCH {
		c.signalled.Store(false)
		return fmt.Errorf("kicking vCPU %d (tid %d): %w", c.id, c.TID(), err)
	}
	return nil
}

// Park asks the vCPU to leave guest mode and wait until Unpark. It returns
// once the request is made; the thread parks within one kick. Parking a
// vCPU whose thread has ended does nothing.
func (c *VCPU) Park() error {
	atomic.OrUint32(&c.hold, holdSched)
	if err := c.Kick(); err != nil && err != errVCPUExited {
		return err
	}
	return nil
}

// Unpark lets a vCPU the scheduler parked run again (it stays held while
// its VM is paused).
func (c *VCPU) Unpark() error {
	atomic.AndUint32(&c.hold, ^holdSched)
	futexWake(&c.hold)
	return nil
}

// pause holds the vCPU out of guest mode until resume.
func (c *VCPU) pause() {
	atomic.OrUint32(&c.hold, holdPause)
	_ = c.Kick()
}

// resume releases a pause.
func (c *VCPU) resume() {
	atomic.AndUint32(&c.hold, ^holdPause)
	futexWake(&c.hold)
}

// Running reports whether the vCPU thread is in (or entering) guest mode.
func (c *VCPU) Running() bool { return c.running.Load() == 1 }

// SetAffinity pins the vCPU thread to the given host CPUs.
func (c *VCPU) SetAffinity(cpus []int) error {
	tid := c.TID()
	if tid == 0 || !c.live.Load() {
		return errVCPUExited
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

// KVMStats returns KVM's own counters of this vCPU (the exits it handled
// in the kernel among them), live while it runs and as it ended after.
func (c *VCPU) KVMStats() map[string]uint64 {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	if c.kstats == nil {
		return c.final
	}
	return pickKVMCounters(c.kstats)
}

func (c *VCPU) stop() {
	c.control.Or(ctlStop)
	futexWake(&c.hold)
	_ = c.Kick()
}

// run is the vCPU thread, started by osthread.Go: it creates the vCPU on
// its own locked OS thread, sets it up and loops on KVM_RUN until the VM
// stops. The thread dies with the goroutine, taking any state KVM, the
// seccomp filter or the signal mask left on it.
func (c *VCPU) run(setup func(*kvm.VCPU) error) {
	defer close(c.done)
	c.tid.Store(int32(unix.Gettid()))
	osthread.SetName(fmt.Sprintf("vcpu%d", c.id)) // audit records and top -H name threads by it
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
	if fd, err := cpu.StatsFD(); err == nil {
		if st, err := kvm.OpenStats(fd); err == nil {
			c.kstats = st
		}
	}
	if err := seccomp.Thread(seccomp.VCPU); err != nil { // the vCPU's syscall filter, once set up
		c.ready <- fmt.Errorf("vCPU %d: %w", c.id, err)
		c.release()
		return
	}
	c.live.Store(true)
	c.ready <- nil
	// A stop that came before live was set found nothing to kick.
	if c.control.Load()&ctlStop == 0 {
		c.err = c.loop()
	}
	c.release()
}

// release waits out Kicks in flight and frees the vCPU: after it, Kick,
// Park and SetAffinity are no-ops.
func (c *VCPU) release() {
	c.live.Store(false)
	for c.kickers.Load() != 0 {
		runtime.Gosched()
	}
	c.statsMu.Lock()
	if c.kstats != nil {
		c.final = pickKVMCounters(c.kstats)
		c.kstats.Close()
		c.kstats = nil
	}
	c.statsMu.Unlock()
	c.cpu.Close()
}

func (c *VCPU) loop() error {
	c.running.Store(1)
	defer func() {
		c.running.Store(0)
		c.vm.parked.wake()
	}()
	for {
		reason, err := c.cpu.Run()
		if err != nil {
			c.vm.stop(ExitError, err)
			return err
		}
		if int(reason) < len(c.exits) {
			c.exits[reason].Add(1)
		}
		if reason != kvm.ExitShutdown && reason != kvm.ExitSystemEvent {
			c.lastExit = exitRecord{reason: reason}
		}
		switch reason {
		case kvm.ExitIO:
			io, err := c.cpu.IO()
			if err != nil {
				c.vm.stop(ExitError, err)
				return err
			}
			c.lastExit.addr, c.lastExit.write = uint64(io.Port), io.Out
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
			c.lastExit.addr, c.lastExit.write = m.Addr, m.Write
			if m.Write {
				c.vm.mmioWrite(m.Addr, m.Data)
			} else {
				c.vm.mmioRead(m.Addr, m.Data)
			}
		case kvm.ExitIntr:
			// Whatever a kick asked for (hold, stop) is checked below,
			// after these are cleared: a kick between them is not lost.
			c.cpu.SetImmediateExit(false)
			c.signalled.Store(false)
		case kvm.ExitHLT:
			// Only without an in-kernel LAPIC; nothing to do but go on.
		case kvm.ExitShutdown:
			// A triple fault: the guest did not ask for a reset.
			c.vm.stop(ExitCrash, c.crash("triple fault"))
		case kvm.ExitSystemEvent:
			switch c.cpu.SystemEvent() {
			case kvm.SystemEventReset:
				c.vm.stop(ExitReset, nil)
			case kvm.SystemEventCrash:
				c.vm.stop(ExitCrash, c.crash("guest crash event"))
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
		if want := c.sampleWant.Load(); want != c.sampleDone {
			c.sampleRIP(want)
		}
		if c.control.Load()&ctlStop != 0 {
			return nil
		}
		if atomic.LoadUint32(&c.hold) != 0 {
			c.park()
			if c.control.Load()&ctlStop != 0 {
				return nil
			}
		}
	}
}

// sampleRIP answers the SampleRIPs requests up to want on the vCPU's
// thread (0 if the registers cannot be read).
func (c *VCPU) sampleRIP(want uint64) {
	var rip uint64
	if r, err := c.cpu.Regs(); err == nil {
		rip = r.RIP
	}
	c.rip.Store(rip)
	c.ripFor.Store(want)
	c.sampleDone = want
}

// park blocks the thread while it is held (or until stop). After a pause
// it tells the guest, through kvmclock, that it was stopped.
func (c *VCPU) park() {
	c.running.Store(0)
	c.vm.parked.wake()
	paused, counted := false, false
	for c.control.Load()&ctlStop == 0 {
		h := atomic.LoadUint32(&c.hold)
		if h == 0 {
			break
		}
		if h&holdPause != 0 {
			paused = true
		}
		if h&holdSched != 0 && !counted {
			c.parks.Add(1)
			counted = true
		}
		futexWait(&c.hold, h)
	}
	if paused {
		// EINVAL: the guest does not use kvmclock; nothing to tell it.
		if c.cpu.KVMClockCtrl() == nil {
			c.clockCtrls.Add(1)
		}
	}
	c.running.Store(1)
}

// crash records a guest crash on this vCPU with its last state.
func (c *VCPU) crash(what string) error {
	e := &CrashError{VCPU: c.id, What: what}
	if r, err := c.cpu.Regs(); err == nil {
		e.RIP, e.RSP, e.RFlags = r.RIP, r.RSP, r.RFLAGS
	}
	if s, err := c.cpu.Sregs(); err == nil {
		e.CR0, e.CR2, e.CR3, e.CR4, e.EFER = s.CR0, s.CR2, s.CR3, s.CR4, s.EFER
	}
	// AMD's SVM reinitialises a vCPU on a shutdown intercept: what is left
	// is the reset state (CS:IP at the reset vector, real mode).
	e.StateLost = e.RIP == 0xfff0 && e.CR0&1 == 0
	for i := range c.exits {
		e.Exits += c.exits[i].Load()
	}
	e.LastExit = c.lastExit.String()
	return e
}

// CrashError describes a guest that crashed (a triple fault, or a crash
// it reported through KVM), with the crashing vCPU's last state.
type CrashError struct {
	// VCPU is the vCPU that saw the crash; What says what it was.
	VCPU int
	What string
	// The vCPU's registers when it crashed.
	RIP, RSP, RFlags         uint64
	CR0, CR2, CR3, CR4, EFER uint64
	// StateLost is true when KVM had already reset the vCPU (AMD SVM does
	// on a triple fault), so the registers above are its reset state, not
	// where the guest crashed.
	StateLost bool
	// Exits is the vCPU's number of exits to userspace until then, and
	// LastExit the one before the crash.
	Exits    uint64
	LastExit string
}

func (e *CrashError) Error() string {
	if e.StateLost {
		return fmt.Sprintf("guest crashed: %s on vCPU %d after %d exits to the VMM (the last: %s); KVM reset the vCPU at the crash, so its registers are lost",
			e.What, e.VCPU, e.Exits, e.LastExit)
	}
	return fmt.Sprintf("guest crashed: %s on vCPU %d at rip %#x (rsp %#x, rflags %#x, cr0 %#x, cr2 %#x, cr3 %#x, cr4 %#x, efer %#x) after %d exits to the VMM (the last: %s)",
		e.What, e.VCPU, e.RIP, e.RSP, e.RFlags, e.CR0, e.CR2, e.CR3, e.CR4, e.EFER, e.Exits, e.LastExit)
}

// exitRecord is a vCPU's latest exit to userspace, kept by its thread for
// crash reports at the cost of a few stores per exit.
type exitRecord struct {
	reason kvm.ExitReason
	addr   uint64 // port or MMIO address
	write  bool
}

func (r exitRecord) String() string {
	dir := "read"
	if r.write {
		dir = "write"
	}
	switch r.reason {
	case kvm.ExitIO:
		return fmt.Sprintf("port %#x %s", r.addr, dir)
	case kvm.ExitMMIO:
		return fmt.Sprintf("MMIO %#x %s", r.addr, dir)
	case kvm.ExitUnknown:
		return "none"
	}
	return r.reason.String()
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
