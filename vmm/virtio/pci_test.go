package virtio_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/pci"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/rng"
)

// Offsets of the transport's BAR regions (the guest learns them from the
// capabilities; the test checks that too).
const (
	common = 0x0000
	notify = 0x3000
	table  = 0x4000
)

func w16(p *virtio.PCI, off uint64, v uint16) {
	b := make([]byte, 2)
	binary.LittleEndian.PutUint16(b, v)
	p.BARWrite(0, off, b)
}
func w32(p *virtio.PCI, off uint64, v uint32) {
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, v)
	p.BARWrite(0, off, b)
}
func w64(p *virtio.PCI, off uint64, v uint64) { w32(p, off, uint32(v)); w32(p, off+4, uint32(v>>32)) }
func r8(p *virtio.PCI, off uint64) uint8      { b := make([]byte, 1); p.BARRead(0, off, b); return b[0] }
func r16(p *virtio.PCI, off uint64) uint16 {
	b := make([]byte, 2)
	p.BARRead(0, off, b)
	return binary.LittleEndian.Uint16(b)
}
func r32(p *virtio.PCI, off uint64) uint32 {
	b := make([]byte, 4)
	p.BARRead(0, off, b)
	return binary.LittleEndian.Uint32(b)
}

// newTransport wraps dev in a transport on a bus, over 16 MiB of guest
// memory and a KVM-like fake platform, all closed when t ends.
func newTransport(t *testing.T, dev virtio.Device) (*virtio.PCI, *virtio.FakePlatform, *memory.Memory) {
	t.Helper()
	mem, err := memory.New(16<<20, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	plat := virtio.NewFakePlatform()
	p, err := virtio.NewPCI(dev, mem, plat)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	bus, err := pci.NewBus(pci.Windows{MMIO32Base: 0xc0000000, MMIO32Size: 0x10000000, IOBase: 0xc000, IOSize: 0x1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Add(p); err != nil {
		t.Fatal(err)
	}
	return p, plat, mem
}

func setup(t *testing.T) (*virtio.PCI, *virtio.FakePlatform, *memory.Memory) {
	return newTransport(t, rng.New())
}

func TestCapabilities(t *testing.T) {
	p, _, _ := setup(t)
	cfg := p.Config()
	if id := cfg.Bytes(0, 4); binary.LittleEndian.Uint32(id) != 0x10441af4 {
		t.Fatalf("ids % x", id)
	}
	types := map[byte]uint32{}
	for off := uint32(cfg.Bytes(0x34, 1)[0]); off != 0; off = uint32(cfg.Bytes(off+1, 1)[0]) {
		c := cfg.Bytes(off, 16)
		if c[0] == 0x09 {
			types[c[3]] = binary.LittleEndian.Uint32(c[8:])
		}
	}
	want := map[byte]uint32{1: common, 2: notify, 3: 0x1000, 4: 0x2000}
	for typ, off := range want {
		if got, ok := types[typ]; !ok || got != off {
			t.Errorf("virtio cap type %d at %#x (present %v), want %#x", typ, got, ok, off)
		}
	}
}

func TestNegotiationAndQueue(t *testing.T) {
	p, plat, mem := setup(t)
	w32(p, common+0x00, 1)
	if f := r32(p, common+0x04); f&1 == 0 {
		t.Fatalf("VERSION_1 not offered: high features %#x", f)
	}
	w16(p, common+0x14, 1|2) // ACKNOWLEDGE | DRIVER
	// A driver without VERSION_1 is refused FEATURES_OK.
	w16(p, common+0x14, 1|2|8)
	if r8(p, common+0x14)&8 != 0 {
		t.Fatal("FEATURES_OK accepted without VERSION_1")
	}
	w16(p, common+0x14, 0) // reset
	if r8(p, common+0x14) != 0 {
		t.Fatal("reset did not clear status")
	}
	w16(p, common+0x14, 1|2)
	w32(p, common+0x08, 1)
	w32(p, common+0x0c, 1) // VERSION_1
	w16(p, common+0x14, 1|2|8)
	if r8(p, common+0x14)&8 == 0 {
		t.Fatal("FEATURES_OK refused")
	}
	if n := r16(p, common+0x12); n != 1 {
		t.Fatalf("num_queues %d", n)
	}
	// MSI-X: enable and program vector 1 for queue 0.
	entry := make([]byte, 16)
	binary.LittleEndian.PutUint64(entry, 0xfee00000)
	binary.LittleEndian.PutUint32(entry[8:], 0x41)
	p.BARWrite(0, table+16, entry)
	capOff := uint32(0)
	cfg := p.Config()
	for off := uint32(cfg.Bytes(0x34, 1)[0]); off != 0; off = uint32(cfg.Bytes(off+1, 1)[0]) {
		if cfg.Bytes(off, 1)[0] == 0x11 {
			capOff = off
		}
	}
	cfg.Write(capOff+3, []byte{0x80})
	// Queue 0: size 8 rings in guest memory.
	w16(p, common+0x16, 0)
	w16(p, common+0x18, 8)
	w16(p, common+0x1a, 1)
	if v := r16(p, common+0x1a); v != 1 {
		t.Fatalf("queue vector %d", v)
	}
	const desc, avail, used, buf = 0x10000, 0x11000, 0x12000, 0x20000
	w64(p, common+0x20, desc)
	w64(p, common+0x28, avail)
	w64(p, common+0x30, used)
	w16(p, common+0x1c, 1)
	w16(p, common+0x14, 1|2|8|4) // DRIVER_OK
	// One kick at the MMIO notification address, one on the port with
	// the queue's index as its datamatch.
	if n := plat.Registered(); n != 2 {
		t.Fatalf("%d ioeventfds registered, want 2", n)
	}
	port := uint16(cfg.Mapped(1))
	if port < 0xc000 {
		t.Fatalf("I/O BAR at port %#x, want one in the bus's window from 0xc000", port)
	}
	if _, ok := plat.PortEvent(port, 0); !ok {
		t.Fatalf("no ioeventfd for queue 0 on port %#x", port)
	}
	// Post a 64-byte writable buffer and kick through the MMIO path.
	d := make([]byte, 16)
	binary.LittleEndian.PutUint64(d, buf)
	binary.LittleEndian.PutUint32(d[8:], 64)
	binary.LittleEndian.PutUint16(d[12:], 2)
	mem.Write(desc, d)
	mem.PutUint16(avail+4, 0)
	mem.PutUint16(avail+2, 1)
	w16(p, notify, 0)
	deadline := time.Now().Add(5 * time.Second)
	// usedUpTo waits until the used index reaches idx.
	usedUpTo := func(idx uint16, what string) {
		t.Helper()
		for {
			if got, _ := mem.Uint16(used + 2); got == idx {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the device never used the buffer %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	usedUpTo(1, "kicked through the MMIO path")
	if n, _ := mem.Uint32(used + 8); n != 64 {
		t.Errorf("used length %d", n)
	}
	// A second buffer, kicked on the port without the ioeventfd (as the
	// exit path delivers it); a write naming no queue is ignored.
	binary.LittleEndian.PutUint64(d, buf+64)
	mem.Write(desc+16, d)
	mem.PutUint16(avail+6, 1)
	mem.PutUint16(avail+2, 2)
	p.BARWrite(1, 0, []byte{7, 0})
	p.BARWrite(1, 0, []byte{0, 0})
	usedUpTo(2, "kicked on the port")
	for plat.Route(1).Count() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if plat.Route(1).Count() == 0 {
		t.Error("no interrupt on the queue's vector")
	}
	// Reset tears the queue down and unregisters the kick.
	w16(p, common+0x14, 0)
	if plat.Registered() != 0 || r8(p, common+0x14) != 0 {
		t.Errorf("after reset: %d ioeventfds, status %d", plat.Registered(), r8(p, common+0x14))
	}
}

func TestBrokenQueueNeedsReset(t *testing.T) {
	p, _, _ := setup(t)
	w16(p, common+0x14, 1|2)
	w32(p, common+0x08, 1)
	w32(p, common+0x0c, 1)
	w16(p, common+0x14, 1|2|8)
	w16(p, common+0x16, 0)
	w64(p, common+0x20, 1<<40) // descriptor table outside guest memory
	w16(p, common+0x1c, 1)
	w16(p, common+0x14, 1|2|8|4)
	if st := r8(p, common+0x14); st&0x40 == 0 {
		t.Fatalf("status %#x lacks DEVICE_NEEDS_RESET", st)
	}
	if p.Err() == nil {
		t.Error("no error recorded")
	}
	if st := p.Stats(); st.NeedsReset != 1 || st.FailedActivations != 1 {
		t.Errorf("stats %+v, want one failed activation counted as one NEEDS_RESET", st)
	}
	// A reset clears the mark but not the count.
	w16(p, common+0x14, 0)
	if st := p.Stats(); st.NeedsReset != 1 || r8(p, common+0x14)&0x40 != 0 {
		t.Errorf("after reset: stats %+v, status %#x", st, r8(p, common+0x14))
	}
}
