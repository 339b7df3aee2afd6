// Package cpuid derives the CPUID leaves each vCPU sees from what KVM
// supports: it sets the APIC id and topology per vCPU, marks the CPU as a
// hypervisor guest, and keeps KVM's paravirtual leaves (kvm-clock, PV EOI,
// PV IPIs) so the guest gets a trustworthy clock and TSC-deadline timer.
package cpuid

import (
	"math/bits"

	"github.com/colibrivm/colibri/kvm"
)

// Leaves colibri edits.
const (
	leafFeatures    = 0x1
	leafCacheParams = 0x4
	leafPerfMon     = 0xa
	leafTopology    = 0xb
	leafTopologyV2  = 0x1f
	leafKVMSig      = 0x40000000
	leafAMDSizes    = 0x80000008
	leafAMDTopology = 0x8000001e
)

// Feature bits.
const (
	ecxHypervisor  = 1 << 31
	ecxTSCDeadline = 1 << 24
	edxHTT         = 1 << 28
)

// ForVCPU returns the CPUID leaves for vCPU id (its APIC id) of a VM with n
// vCPUs, each a core of one socket with one thread.
func ForVCPU(supported []kvm.CPUIDEntry, id, n int) []kvm.CPUIDEntry {
	shift := uint32(bits.Len(uint(n - 1))) // bits of the APIC id that number cores
	out := make([]kvm.CPUIDEntry, 0, len(supported))
	for _, e := range supported {
		switch e.Function {
		case leafFeatures:
			e.Ebx = e.Ebx&0x0000ffff | uint32(id)<<24 | uint32(n)<<16
			e.Ecx |= ecxHypervisor
			e.Edx |= edxHTT
		case leafCacheParams:
			// EAX[31:26]: cores per package - 1; EAX[25:14]: threads
			// sharing the cache - 1 (one thread per core).
			if e.Eax&0x1f != 0 {
				e.Eax = e.Eax&0x3fff | uint32(n-1)<<26
			}
		case leafTopology, leafTopologyV2:
			e.Edx = uint32(id)
			switch e.Index {
			case 0: // SMT level: one thread per core.
				e.Eax, e.Ebx, e.Ecx = 0, 1, 1<<8|e.Index
			case 1: // core level.
				e.Eax, e.Ebx, e.Ecx = shift, uint32(n), 2<<8|e.Index
			default:
				e.Eax, e.Ebx, e.Ecx = 0, 0, e.Index
			}
		case leafPerfMon:
			// No virtual PMU: the guest would only fault on its MSRs.
			e.Eax, e.Ebx, e.Ecx, e.Edx = 0, 0, 0, 0
		case leafAMDSizes:
			e.Ecx = shift<<12 | uint32(n-1)
		case leafAMDTopology:
			e.Eax = uint32(id)
			e.Ebx = uint32(id) & 0xff // core id; threads per core - 1 = 0
			e.Ecx = 0
		}
		out = append(out, e)
	}
	return out
}

// HasTSCDeadline reports whether leaf 1 advertises the TSC-deadline timer.
func HasTSCDeadline(entries []kvm.CPUIDEntry) bool {
	for _, e := range entries {
		if e.Function == leafFeatures {
			return e.Ecx&ecxTSCDeadline != 0
		}
	}
	return false
}

// HasKVMLeaves reports whether KVM's paravirtual signature leaf (kvm-clock
// and friends) is present.
func HasKVMLeaves(entries []kvm.CPUIDEntry) bool {
	for _, e := range entries {
		if e.Function == leafKVMSig {
			return e.Ebx == 0x4b4d564b // "KVMK"
		}
	}
	return false
}
