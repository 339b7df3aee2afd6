package netdev_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
)

// FuzzParseTx: a transmit chain of any shape either parses to a frame made
// of exactly its bytes after the header, or is refused.
func FuzzParseTx(f *testing.F) {
	f.Add([]byte{12, 60}, false)
	f.Add([]byte{5, 7, 40, 3}, false)
	f.Add([]byte{12, 1, 0}, true)
	f.Add([]byte{0, 0, 12, 14}, false)
	scratch := make([]byte, netdev.MaxFrame)
	f.Fuzz(func(t *testing.T, lens []byte, lastWritable bool) {
		c := &virtq.Chain{}
		var all []byte
		for i, n := range lens {
			buf := make([]byte, int(n)*3)
			for j := range buf {
				buf[j] = byte(i*31 + j)
			}
			w := lastWritable && i == len(lens)-1
			c.Segs = append(c.Segs, virtq.Seg{Buf: buf, Write: w})
			if w {
				c.WriteLen += uint32(len(buf))
			} else {
				c.ReadLen += uint32(len(buf))
				all = append(all, buf...)
			}
		}
		frame, off, err := netdev.ParseTx(c, scratch, true, true)
		if err != nil {
			return
		}
		if len(all) < netdev.HeaderLen+netdev.MinFrame || c.WriteLen > 0 {
			t.Fatalf("accepted a chain of %d readable bytes (writable %d)", len(all), c.WriteLen)
		}
		if !bytes.Equal(frame, all[netdev.HeaderLen:]) {
			t.Fatalf("frame of %d bytes is not the chain after its header", len(frame))
		}
		if err := off.Check(len(frame)); err != nil {
			t.Fatalf("accepted offload %+v that does not fit the frame: %v", off, err)
		}
	})
}

// FuzzDeliver: whatever the driver put in its receive ring (descriptor
// table, available ring, indices), delivering frames never panics, never
// writes outside guest memory and either succeeds or reports the ring.
func FuzzDeliver(f *testing.F) {
	desc := func(addr uint64, n uint32, flags, next uint16) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint64(b, addr)
		binary.LittleEndian.PutUint32(b[8:], n)
		binary.LittleEndian.PutUint16(b[12:], flags)
		binary.LittleEndian.PutUint16(b[14:], next)
		return b
	}
	good := append(desc(0x100000, 2048, 2, 0), desc(0x101000, 2048, 2, 0)...)
	f.Add(good, []byte{0, 0, 1, 0}, uint16(2), uint16(60))
	f.Add(append(desc(0x100000, 100, 2, 0), desc(0x101000, 100, 2, 0)...), []byte{0, 0, 1, 0}, uint16(2), uint16(150))
	f.Add(desc(0xfffffffffffff000, 4096, 2, 0), []byte{0, 0}, uint16(1), uint16(60))
	f.Add(desc(0x100000, 64, 4, 0), []byte{0, 0}, uint16(1), uint16(60))
	f.Add(desc(0x100000, 64, 3, 0), []byte{0, 0}, uint16(1), uint16(60))
	f.Add(desc(0x100000, 8, 2, 0), []byte{0, 0}, uint16(40000), uint16(60))
	const size = 16
	mem, err := memory.New(16<<20, memory.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer mem.Close()
	f.Fuzz(func(t *testing.T, table, ring []byte, availIdx, frameLen uint16) {
		clear(mem.Host()[:0x10000])
		mem.Write(0x1000, table[:min(len(table), 16*size)])
		mem.Write(0x2000+4, ring[:min(len(ring), 2*size)])
		mem.PutUint16(0x2000+2, availIdx)
		var broken error
		vq, err := virtq.New(mem, virtq.Config{Size: size, DescAddr: 0x1000, AvailAddr: 0x2000, UsedAddr: 0x3000, EventIdx: true})
		if err != nil {
			t.Fatal(err)
		}
		txq, _ := virtq.New(mem, virtq.Config{Size: size, DescAddr: 0x4000, AvailAddr: 0x5000, UsedAddr: 0x6000, EventIdx: true})
		var pairs []*netdev.QueuePair
		dev, _ := netdev.New(netdev.Config{MAC: mac, Pairs: 1, Attach: func(p []*netdev.QueuePair) { pairs = p }})
		queues := []*virtio.Queue{
			virtio.NewQueue(vq, 0, func() {}, func(err error) { broken = err }),
			virtio.NewQueue(txq, 1, func() {}, func(error) {}),
			nil,
		}
		if err := dev.Activate(virtio.FeatureVersion1|virtio.FeatureEventIdx|netdev.FeatureMrgRxBuf, queues); err != nil {
			t.Fatal(err)
		}
		fr := make([]byte, int(frameLen)%(netdev.MaxFrame+1))
		for i := 0; i < 4; i++ {
			ok := pairs[0].Deliver(fr)
			if ok && broken != nil {
				t.Fatalf("delivered into a ring reported broken: %v", broken)
			}
		}
		pairs[0].Flush()
		used, _ := mem.Uint16(0x3000 + 2)
		if used > 4*size {
			t.Fatalf("used index %d after 4 deliveries into a ring of %d", used, size)
		}
	})
}
