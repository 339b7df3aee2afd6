package cpuid

import (
	"testing"

	"github.com/colibrivm/colibri/kvm"
)

func find(t *testing.T, es []kvm.CPUIDEntry, fn, idx uint32) kvm.CPUIDEntry {
	t.Helper()
	for _, e := range es {
		if e.Function == fn && e.Index == idx {
			return e
		}
	}
	t.Fatalf("leaf %#x.%d missing", fn, idx)
	return kvm.CPUIDEntry{}
}

func TestForVCPU(t *testing.T) {
	supported := []kvm.CPUIDEntry{
		{Function: 1, Ebx: 0xff00_1234, Ecx: ecxTSCDeadline},
		{Function: 0xb, Index: 0, Flags: kvm.CPUIDFlagSignificantIndex},
		{Function: 0xb, Index: 1, Flags: kvm.CPUIDFlagSignificantIndex},
		{Function: 0xa, Eax: 0x07300805},
		{Function: 0x40000000, Ebx: 0x4b4d564b},
		{Function: 0x8000001e},
	}
	for _, tc := range []struct{ id, n int }{{0, 1}, {1, 2}, {3, 4}, {4, 5}} {
		es := ForVCPU(supported, tc.id, tc.n)
		l1 := find(t, es, 1, 0)
		if got := int(l1.Ebx >> 24); got != tc.id {
			t.Errorf("vcpu %d/%d: leaf 1 APIC id %d", tc.id, tc.n, got)
		}
		if got := int(l1.Ebx >> 16 & 0xff); got != tc.n {
			t.Errorf("vcpu %d/%d: leaf 1 logical count %d", tc.id, tc.n, got)
		}
		if l1.Ebx&0xffff != 0x1234 {
			t.Errorf("leaf 1 EBX low bits clobbered: %#x", l1.Ebx)
		}
		if l1.Ecx&ecxHypervisor == 0 {
			t.Error("hypervisor bit not set")
		}
		core := find(t, es, 0xb, 1)
		if int(core.Ebx) != tc.n || int(core.Edx) != tc.id {
			t.Errorf("vcpu %d/%d: leaf 0xb.1 = %+v", tc.id, tc.n, core)
		}
		if tc.n > 1 && 1<<core.Eax < tc.n {
			t.Errorf("vcpu %d/%d: core shift %d cannot hold %d cores", tc.id, tc.n, core.Eax, tc.n)
		}
		if pm := find(t, es, 0xa, 0); pm.Eax != 0 {
			t.Errorf("PMU leaf not cleared: %#x", pm.Eax)
		}
		if amd := find(t, es, 0x8000001e, 0); int(amd.Eax) != tc.id {
			t.Errorf("AMD topology APIC id %d", amd.Eax)
		}
	}
	if !HasTSCDeadline(supported) || !HasKVMLeaves(supported) {
		t.Error("feature helpers missed present features")
	}
}
