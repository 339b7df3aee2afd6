//go:build linux && amd64

package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
)

// testRing lays a ring's pages out in mem from base, the way the
// attacker's arena does in the guest.
func testRing(t *testing.T, mem *memory.Memory, base uint64) *ring {
	pg := func(i int) *page {
		pa := base + uint64(i)*pageSize
		b, err := mem.Slice(pa, pageSize)
		if err != nil {
			t.Fatal(err)
		}
		return &page{b: b, pa: pa}
	}
	r := &ring{desc: pg(0), avail: pg(1), used: pg(2), ind: []*page{pg(3), pg(4)}}
	for i := 5; i < 9; i++ {
		r.data = append(r.data, pg(i))
	}
	return r
}

// TestRingAttacksBreakTheQueue runs every ring attack, for each device
// kind and many seeds, against colibri's own split-ring code over guest
// memory of the attacker's guest's size: every chain must break the
// queue. (Run before virtq refused chains over 4 GiB, chain-over-4g
// popped.) It keeps the attacker's expectations and the device model in
// step without KVM.
func TestRingAttacksBreakTheQueue(t *testing.T) {
	const ramSize = 256 << 20
	mem, err := memory.New(ramSize, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	r := testRing(t, mem, 1<<20)
	for _, kind := range []string{"net", "blk", "rng"} {
		d := &vdev{pciDev: &pciDev{barPA: 0xc0000000}, kind: kind, mac: [6]byte{0x52, 0x54, 0, 0, 0, 0xa}}
		for _, ra := range ringAttacks {
			for seed := uint64(0); seed < 40; seed++ {
				a := &attacker{rnd: rand.New(rand.NewPCG(seed, 7)), ram: []ramRange{{1 << 20, ramSize}}, ramEnd: ramSize,
					ip: [4]byte{10, 0, 0, 3}, peer: [4]byte{10, 0, 0, 1}}
				size := uint16(4) << a.rnd.IntN(7) // 4..256
				r.clear(size)
				for _, p := range append(r.ind, r.data...) {
					p.zero()
				}
				q, err := virtq.New(mem, virtq.Config{Size: size, DescAddr: r.desc.pa, AvailAddr: r.avail.pa, UsedAddr: r.used.pa})
				if err != nil {
					t.Fatal(err)
				}
				ra.build(a, d, r, r.data[len(r.data)-1])
				var c virtq.Chain
				ok, err := q.Pop(&c)
				if ok || !errors.Is(err, virtq.ErrBroken) {
					t.Errorf("%s on %s, seed %d, size %d: pop = %v, %v; want the queue broken", ra.name, kind, seed, size, ok, err)
				}
			}
		}
	}
}

// TestMSIHarmless: every message msiEntry makes either reaches no vCPU
// of a one-vCPU guest or is a fixed, edge interrupt on a spare vector.
func TestMSIHarmless(t *testing.T) {
	a := &attacker{rnd: rand.New(rand.NewPCG(1, 2))}
	for i := 0; i < 100000; i++ {
		addr, data := a.msiEntry(0x345f000)
		dest, logical := addr>>12&0xff, addr&4 != 0
		if (dest == 0 || dest == 0xff || logical) && (data&0xff00 != 0 || data&0xff < 0xe0 || data&0xff > 0xeb) {
			t.Fatalf("message %#x/%#x can reach vCPU 0 with mode %d vector %#x", addr, data, data>>8&7, data&0xff)
		}
	}
	for _, c := range []struct {
		addr uint64
		data uint32
		want bool
	}{
		{0xfee00000, 0x500, false},   // INIT to APIC 0
		{0xfee01000, 0x500, true},    // INIT to APIC 1: nobody
		{0xfee01004, 0x500, false},   // logical: may be this vCPU
		{0xfeeff000, 0x30, false},    // broadcast
		{0xfee00000, 0xe3, true},     // a spare vector, fixed, edge
		{0xfee00000, 0x80e3, false},  // level-triggered
		{0x1234500000, 0x400, false}, // bits 12-19 are 0: APIC 0
		{0x1234501000, 0x400, true},
	} {
		want := c.want
		if got := msiHarmless(c.addr, c.data); got != want {
			t.Errorf("msiHarmless(%#x, %#x) = %v, want %v", c.addr, c.data, got, want)
		}
	}
}

func TestARPRequest(t *testing.T) {
	b := make([]byte, arpFrame)
	arpRequest(b, [6]byte{0x52, 0x54, 0, 0, 0, 0xa}, [4]byte{10, 0, 0, 3}, [4]byte{10, 0, 0, 1})
	want := "ffffffffffff5254000000 0a0806 0001080006040001 52540000000a0a000003 0000000000000a000001"
	got := fmt.Sprintf("%x", b[:11]) + " " + fmt.Sprintf("%x", b[11:14]) + " " + fmt.Sprintf("%x", b[14:22]) + " " +
		fmt.Sprintf("%x", b[22:32]) + " " + fmt.Sprintf("%x", b[32:42])
	if got != want {
		t.Errorf("ARP request\n%s\nwant\n%s", got, want)
	}
}

func TestCanary(t *testing.T) {
	p := &page{b: make([]byte, pageSize)}
	fillCanary(p, 9, 2)
	if !checkCanary(p, 9, 2) || checkCanary(p, 9, 3) || checkCanary(p, 8, 2) {
		t.Fatal("canary pattern does not depend on seed and page as it should")
	}
	p.b[100] ^= 1
	if checkCanary(p, 9, 2) {
		t.Fatal("a changed byte went unnoticed")
	}
}
