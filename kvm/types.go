package kvm

import gokvm "github.com/bobuhiro11/gokvm/kvm"

// Regs are the general purpose registers (struct kvm_regs).
type Regs = gokvm.Regs

// Sregs are the special registers (struct kvm_sregs).
type Sregs = gokvm.Sregs

// Segment is a segment register's cached descriptor (struct kvm_segment).
type Segment = gokvm.Segment

// Descriptor is a GDT or IDT pointer (struct kvm_dtable).
type Descriptor = gokvm.Descriptor

// CPUIDEntry is one CPUID leaf (struct kvm_cpuid_entry2).
type CPUIDEntry = gokvm.CPUIDEntry2

// LAPICState is the local APIC register page (struct kvm_lapic_state).
type LAPICState = gokvm.LAPICState

// FPU is the legacy FPU/SSE state (struct kvm_fpu).
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// MSR is one model-specific register value (struct kvm_msr_entry).
type MSR struct {
	Index uint32
	_     uint32
	Data  uint64
}

// CPUIDEntry flags.
const (
	CPUIDFlagSignificantIndex = 1 << 0
)

type userspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

type irqfd struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]uint8
}

type ioeventfd struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]uint8
}

type enableCap struct {
	Cap   uint32
	Flags uint32
	Args  [4]uint64
	_     [64]uint8
}
