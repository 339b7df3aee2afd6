package rng

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
)

const (
	descAddr  = 0x1000
	availAddr = 0x2000
	usedAddr  = 0x3000
	bufAddr   = 0x10000
)

// TestFillsBuffers posts two writable buffers, runs Process and checks that
// both were filled, the used ring reports their lengths and one interrupt
// was raised.
func TestFillsBuffers(t *testing.T) {
	mem, err := memory.New(16<<20, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	lens := []uint32{64, 256}
	addr := uint64(bufAddr)
	for i, n := range lens {
		d := make([]byte, 16)
		binary.LittleEndian.PutUint64(d[0:], addr)
		binary.LittleEndian.PutUint32(d[8:], n)
		binary.LittleEndian.PutUint16(d[12:], 2) // VIRTQ_DESC_F_WRITE
		mem.Write(descAddr+16*uint64(i), d)
		mem.PutUint16(availAddr+4+2*uint64(i), uint16(i))
		addr += uint64(n)
	}
	mem.PutUint16(availAddr+2, uint16(len(lens)))
	vq, err := virtq.New(mem, virtq.Config{Size: 8, DescAddr: descAddr, AvailAddr: availAddr, UsedAddr: usedAddr})
	if err != nil {
		t.Fatal(err)
	}
	irqs := 0
	var broken error
	q := virtio.NewQueue(vq, 0, func() { irqs++ }, func(err error) { broken = err })
	New().Process(q)
	if broken != nil {
		t.Fatalf("queue failed: %v", broken)
	}
	if idx, _ := mem.Uint16(usedAddr + 2); idx != 2 {
		t.Fatalf("used idx %d, want 2", idx)
	}
	if irqs != 1 {
		t.Fatalf("%d interrupts, want 1", irqs)
	}
	addr = bufAddr
	for i, n := range lens {
		got, _ := mem.Uint32(usedAddr + 4 + 8*uint64(i) + 4)
		if got != n {
			t.Errorf("used[%d].len = %d, want %d", i, got, n)
		}
		b, _ := mem.Slice(addr, uint64(n))
		if bytes.Equal(b, make([]byte, n)) {
			t.Errorf("buffer %d left zero", i)
		}
		addr += uint64(n)
	}
}
