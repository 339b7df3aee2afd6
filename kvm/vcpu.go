package kvm

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ExitReason is kvm_run.exit_reason.
type ExitReason uint32

// Exit reasons colibri handles or counts.
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitSetTPR        ExitReason = 11
	ExitTPRAccess     ExitReason = 12
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
	ExitIOAPICEOI     ExitReason = 26
	ExitHyperV        ExitReason = 27
	ExitX86RDMSR      ExitReason = 29
	ExitX86WRMSR      ExitReason = 30
	// NumExitReasons bounds the exit reasons counted by index.
	NumExitReasons = 64
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "unknown", ExitException: "exception", ExitIO: "io", ExitHypercall: "hypercall",
	ExitDebug: "debug", ExitHLT: "hlt", ExitMMIO: "mmio", ExitIRQWindowOpen: "irq_window_open",
	ExitShutdown: "shutdown", ExitFailEntry: "fail_entry", ExitIntr: "intr", ExitSetTPR: "set_tpr",
	ExitTPRAccess: "tpr_access", ExitNMI: "nmi", ExitInternalError: "internal_error",
	ExitSystemEvent: "system_event", ExitIOAPICEOI: "ioapic_eoi", ExitHyperV: "hyperv",
	ExitX86RDMSR: "rdmsr", ExitX86WRMSR: "wrmsr",
}

// String names the exit reason.
func (r ExitReason) String() string {
	if n, ok := exitNames[r]; ok {
		return n
	}
	return fmt.Sprintf("exit(%d)", uint32(r))
}

// runData mirrors the head of struct kvm_run; the exit-specific union starts
// at offset 32.
type runData struct {
	requestInterruptWindow uint8
	immediateExit          uint8
	_                      [6]uint8
	exitReason             uint32
	readyForInjection      uint8
	ifFlag                 uint8
	flags                  uint16
	cr8                    uint64
	apicBase               uint64
	exit                   [256]byte
}

// VCPU is one virtual CPU. Run must be called from the OS thread that owns
// it (see package vmm); the other methods that touch registers likewise. Kick
// helpers (SetImmediateExit) are safe from any thread.
type VCPU struct {
	fd      int
	id      int
	runPage []byte
	run     *runData
}

// ID returns the vCPU index.
func (c *VCPU) ID() int { return c.id }

// FD returns the vCPU file descriptor.
func (c *VCPU) FD() int { return c.fd }

// Close unmaps kvm_run and closes the vCPU fd.
func (c *VCPU) Close() error {
	if c.fd < 0 {
		return nil
	}
	err := unix.Munmap(c.runPage)
	if cerr := unix.Close(c.fd); err == nil {
		err = cerr
	}
	c.fd = -1
	c.run = nil
	return err
}

// Run enters the guest with KVM_RUN and returns why it left. A pending
// signal or immediate_exit makes it return ExitIntr with a nil error: that is
// an event for the caller, not a failure. Run uses unix.Syscall so the Go
// runtime treats the thread as in a system call and does not preempt it.
func (c *VCPU) Run() (ExitReason, error) {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd), ioRun, 0)
	switch errno {
	case 0:
		return ExitReason(c.run.exitReason), nil
	case unix.EINTR:
		return ExitIntr, nil
	case unix.EAGAIN:
		// KVM_RUN may return EAGAIN when the vCPU is not runnable yet
		// (an AP waiting for INIT/SIPI polls in the kernel instead).
		return ExitIntr, nil
	}
	return ExitUnknown, &Error{Op: fmt.Sprintf("KVM_RUN(vcpu %d)", c.id), Errno: errno}
}

// SetImmediateExit sets kvm_run.immediate_exit: while it is 1, KVM_RUN
// returns EINTR at once instead of entering the guest. Safe from any thread.
func (c *VCPU) SetImmediateExit(on bool) {
	var v uint32
	if on {
		v = 1
	}
	// immediate_exit is byte 1 of the first aligned 4-byte word; the
	// request_interrupt_window byte beside it is only written by this
	// vCPU's own thread before KVM_RUN, so a CAS loop keeps both intact.
	w := (*uint32)(unsafe.Pointer(c.run))
	for {
		old := atomic.LoadUint32(w)
		nw := old&^0xff00 | v<<8
		if atomic.CompareAndSwapUint32(w, old, nw) {
			return
		}
	}
}

// ImmediateExit reports whether kvm_run.immediate_exit is set.
func (c *VCPU) ImmediateExit() bool {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(c.run)))&0xff00 != 0
}

// IOExit describes a KVM_EXIT_IO.
type IOExit struct {
	Out   bool
	Size  int
	Port  uint16
	Count int
	// Data aliases the bytes in the kvm_run page: Size*Count bytes to read
	// (Out) or to fill (In).
	Data []byte
}

// IO returns the port I/O request of the current exit.
func (c *VCPU) IO() (IOExit, error) {
	e := c.run.exit[:]
	size := int(e[1])
	count := int(*(*uint32)(unsafe.Pointer(&e[4])))
	off := *(*uint64)(unsafe.Pointer(&e[8]))
	n := uint64(size) * uint64(count)
	if off >= uint64(len(c.runPage)) || n > uint64(len(c.runPage))-off {
		return IOExit{}, fmt.Errorf("KVM_EXIT_IO data [%d,+%d) outside kvm_run", off, n)
	}
	return IOExit{
		Out:   e[0] == 1,
		Size:  size,
		Port:  *(*uint16)(unsafe.Pointer(&e[2])),
		Count: count,
		Data:  c.runPage[off : off+n],
	}, nil
}

// MMIOExit describes a KVM_EXIT_MMIO.
type MMIOExit struct {
	Addr  uint64
	Write bool
	// Data aliases the bytes in kvm_run: written bytes, or the buffer to
	// fill for a read.
	Data []byte
}

// MMIO returns the MMIO request of the current exit.
func (c *VCPU) MMIO() MMIOExit {
	e := c.run.exit[:]
	n := *(*uint32)(unsafe.Pointer(&e[16]))
	if n > 8 {
		n = 8
	}
	return MMIOExit{
		Addr:  *(*uint64)(unsafe.Pointer(&e[0])),
		Write: e[20] != 0,
		Data:  e[8 : 8+n],
	}
}

// System event types (KVM_EXIT_SYSTEM_EVENT).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// SystemEvent returns the type of a KVM_EXIT_SYSTEM_EVENT.
func (c *VCPU) SystemEvent() uint32 { return *(*uint32)(unsafe.Pointer(&c.run.exit[0])) }

// InternalError returns the suberror of a KVM_EXIT_INTERNAL_ERROR.
func (c *VCPU) InternalError() uint32 { return *(*uint32)(unsafe.Pointer(&c.run.exit[0])) }

// FailEntryReason returns the hardware reason of a KVM_EXIT_FAIL_ENTRY.
func (c *VCPU) FailEntryReason() uint64 { return *(*uint64)(unsafe.Pointer(&c.run.exit[0])) }

// Regs reads the general purpose registers.
func (c *VCPU) Regs() (Regs, error) {
	var r Regs
	_, err := ioctl("KVM_GET_REGS", c.fd, ioGetRegs, uintptr(unsafe.Pointer(&r)))
	return r, err
}

// SetRegs writes the general purpose registers.
func (c *VCPU) SetRegs(r Regs) error {
	_, err := ioctl("KVM_SET_REGS", c.fd, ioSetRegs, uintptr(unsafe.Pointer(&r)))
	return err
}

// Sregs reads the special registers.
func (c *VCPU) Sregs() (Sregs, error) {
	var s Sregs
	_, err := ioctl("KVM_GET_SREGS", c.fd, ioGetSregs, uintptr(unsafe.Pointer(&s)))
	return s, err
}

// SetSregs writes the special registers.
func (c *VCPU) SetSregs(s Sregs) error {
	_, err := ioctl("KVM_SET_SREGS", c.fd, ioSetSregs, uintptr(unsafe.Pointer(&s)))
	return err
}

// SetCPUID sets the CPUID leaves the guest sees.
func (c *VCPU) SetCPUID(entries []CPUIDEntry) error {
	entrySize := int(unsafe.Sizeof(CPUIDEntry{}))
	buf := make([]byte, 8+len(entries)*entrySize)
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(entries))
	for i, e := range entries {
		*(*CPUIDEntry)(unsafe.Pointer(&buf[8+i*entrySize])) = e
	}
	_, err := ioctl("KVM_SET_CPUID2", c.fd, ioSetCPUID2, uintptr(unsafe.Pointer(&buf[0])))
	return err
}

// SetMSRs writes model-specific registers. KVM returns how many it set; a
// short count is an error naming the first MSR refused.
func (c *VCPU) SetMSRs(msrs []MSR) error {
	if len(msrs) == 0 {
		return nil
	}
	buf := make([]byte, 8+16*len(msrs))
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(msrs))
	for i, m := range msrs {
		*(*MSR)(unsafe.Pointer(&buf[8+16*i])) = m
	}
	n, err := ioctl("KVM_SET_MSRS", c.fd, ioSetMSRs, uintptr(unsafe.Pointer(&buf[0])))
	if err != nil {
		return err
	}
	if int(n) != len(msrs) {
		return fmt.Errorf("KVM_SET_MSRS: MSR %#x refused", msrs[n].Index)
	}
	return nil
}

// MSRs reads the given model-specific registers.
func (c *VCPU) MSRs(indices []uint32) ([]MSR, error) {
	buf := make([]byte, 8+16*len(indices))
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(indices))
	for i, idx := range indices {
		*(*uint32)(unsafe.Pointer(&buf[8+16*i])) = idx
	}
	n, err := ioctl("KVM_GET_MSRS", c.fd, ioGetMSRs, uintptr(unsafe.Pointer(&buf[0])))
	if err != nil {
		return nil, err
	}
	out := make([]MSR, n)
	for i := range out {
		out[i] = *(*MSR)(unsafe.Pointer(&buf[8+16*i]))
	}
	return out, nil
}

// FPU reads the FPU state.
func (c *VCPU) FPU() (FPU, error) {
	var f FPU
	_, err := ioctl("KVM_GET_FPU", c.fd, ioGetFPU, uintptr(unsafe.Pointer(&f)))
	return f, err
}

// SetFPU writes the FPU state.
func (c *VCPU) SetFPU(f FPU) error {
	_, err := ioctl("KVM_SET_FPU", c.fd, ioSetFPU, uintptr(unsafe.Pointer(&f)))
	return err
}

// LAPIC reads the local APIC registers.
func (c *VCPU) LAPIC() (LAPICState, error) {
	var l LAPICState
	_, err := ioctl("KVM_GET_LAPIC", c.fd, ioGetLAPIC, uintptr(unsafe.Pointer(&l)))
	return l, err
}

// SetLAPIC writes the local APIC registers.
func (c *VCPU) SetLAPIC(l LAPICState) error {
	_, err := ioctl("KVM_SET_LAPIC", c.fd, ioSetLAPIC, uintptr(unsafe.Pointer(&l)))
	return err
}

// MP states.
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1
	MPStateHalted        = 3
)

// MPState reads the vCPU's multiprocessing state.
func (c *VCPU) MPState() (uint32, error) {
	var s uint32
	_, err := ioctl("KVM_GET_MP_STATE", c.fd, ioGetMPState, uintptr(unsafe.Pointer(&s)))
	return s, err
}

// SetMPState sets the vCPU's multiprocessing state.
func (c *VCPU) SetMPState(state uint32) error {
	_, err := ioctl("KVM_SET_MP_STATE", c.fd, ioSetMPState, uintptr(unsafe.Pointer(&state)))
	return err
}

// SetTSCKHz sets the guest TSC frequency.
func (c *VCPU) SetTSCKHz(khz uint32) error {
	_, err := ioctl("KVM_SET_TSC_KHZ", c.fd, ioSetTSCKHz, uintptr(khz))
	return err
}

// TSCKHz returns the guest TSC frequency in kHz.
func (c *VCPU) TSCKHz() (uint32, error) {
	r, err := ioctl("KVM_GET_TSC_KHZ", c.fd, ioGetTSCKHz, 0)
	return uint32(r), err
}

// KVMClockCtrl tells the guest, through its kvmclock page, that the host
// stopped this vCPU (KVM_KVMCLOCK_CTRL): the guest's soft-lockup and RCU
// stall detectors then do not count the time it was paused. It fails with
// EINVAL when the guest has not enabled kvmclock, which callers may
// ignore.
func (c *VCPU) KVMClockCtrl() error {
	_, err := ioctl("KVM_KVMCLOCK_CTRL", c.fd, ioKVMClockCtrl, 0)
	return err
}

// StatsFD returns a new binary stats file descriptor for the vCPU.
func (c *VCPU) StatsFD() (int, error) {
	fd, err := ioctl("KVM_GET_STATS_FD(vcpu)", c.fd, ioGetStatsFD, 0)
	return int(fd), err
}
