package pci

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
)

// fakeRoute records what the device did with an interrupt route.
type fakeRoute struct {
	mu    sync.Mutex
	msg   MSIMessage
	progs int
	fired int
}

func (r *fakeRoute) Program(m MSIMessage) error {
	r.mu.Lock()
	r.msg = m
	r.progs++
	r.mu.Unlock()
	return nil
}
func (r *fakeRoute) Fire() error  { r.mu.Lock(); r.fired++; r.mu.Unlock(); return nil }
func (r *fakeRoute) EventFD() int { return -1 }
func (r *fakeRoute) Close() error { return nil }

type fakePlatform struct{ routes []*fakeRoute }

func (p *fakePlatform) AllocateMSI() (InterruptRoute, error) {
	r := &fakeRoute{}
	p.routes = append(p.routes, r)
	return r, nil
}
func (p *fakePlatform) RegisterIOEvent(uint64, uint32, int) error     { return nil }
func (p *fakePlatform) UnregisterIOEvent(uint64, uint32, int) error   { return nil }
func (p *fakePlatform) RegisterPortEvent(uint16, uint16, int) error   { return nil }
func (p *fakePlatform) UnregisterPortEvent(uint16, uint16, int) error { return nil }

// testDevice is a function with one 4 KiB BAR that records accesses.
type testDevice struct {
	cfg      *ConfigSpace
	lastOff  uint64
	lastData []byte
	maps     []uint64
}

func newTestDevice(is64 bool) *testDevice {
	d := &testDevice{cfg: NewConfigSpace(0x1af4, 0x1042, 0x1af4, 0x1042, 0x010000, 1)}
	d.cfg.AddBAR(0, 0x1000, is64)
	d.cfg.OnMap = func(bar int, addr uint64) { d.maps = append(d.maps, addr) }
	return d
}

func (d *testDevice) Config() *ConfigSpace { return d.cfg }
func (d *testDevice) BARRead(bar int, off uint64, data []byte) {
	d.lastOff = off
	for i := range data {
		data[i] = 0xab
	}
}
func (d *testDevice) BARWrite(bar int, off uint64, data []byte) {
	d.lastOff, d.lastData = off, append([]byte(nil), data...)
}

// cfgRead reads configuration space through the I/O ports like a guest.
func cfgRead(b *Bus, slot int, reg uint32, size int) uint32 {
	addr := make([]byte, 4)
	binary.LittleEndian.PutUint32(addr, 1<<31|uint32(slot)<<11|reg&0xfc)
	b.PIOWrite(ConfigAddressPort, addr)
	data := make([]byte, size)
	b.PIORead(ConfigDataPort+uint16(reg&3), data)
	var v uint32
	for i := size - 1; i >= 0; i-- {
		v = v<<8 | uint32(data[i])
	}
	return v
}

func cfgWrite(b *Bus, slot int, reg uint32, size int, v uint32) {
	addr := make([]byte, 4)
	binary.LittleEndian.PutUint32(addr, 1<<31|uint32(slot)<<11|reg&0xfc)
	b.PIOWrite(ConfigAddressPort, addr)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(v >> (8 * i))
	}
	b.PIOWrite(ConfigDataPort+uint16(reg&3), data)
}

func TestEnumeration(t *testing.T) {
	b := mustBus(t, Windows{MMIO32Base: 0xc0000000, MMIO32Size: 0x10000000, MMIO64Base: 1 << 36, MMIO64Size: 1 << 30})
	d := newTestDevice(false)
	slot, err := b.Add(d)
	if err != nil || slot != 1 {
		t.Fatalf("Add = %d, %v", slot, err)
	}
	if v := cfgRead(b, 0, 0, 4); v != 0x0d578086 {
		t.Errorf("host bridge id %#x", v)
	}
	if v := cfgRead(b, slot, 0, 4); v != 0x10421af4 {
		t.Errorf("device id %#x", v)
	}
	if v := cfgRead(b, slot, 0x0a, 2); v != 0x0100 {
		t.Errorf("class %#x", v)
	}
	if v := cfgRead(b, 5, 0, 4); v != 0xffffffff {
		t.Errorf("empty slot reads %#x", v)
	}
	// Function 1 of a present slot is absent.
	addr := make([]byte, 4)
	binary.LittleEndian.PutUint32(addr, 1<<31|uint32(slot)<<11|1<<8)
	b.PIOWrite(ConfigAddressPort, addr)
	data := make([]byte, 4)
	b.PIORead(ConfigDataPort, data)
	if binary.LittleEndian.Uint32(data) != 0xffffffff {
		t.Error("function 1 answered")
	}
	// The address latch reads back.
	b.PIORead(ConfigAddressPort, data)
	if binary.LittleEndian.Uint32(data) != binary.LittleEndian.Uint32(addr) {
		t.Error("CONFIG_ADDRESS does not read back")
	}
}

func TestBARSizingAndMove(t *testing.T) {
	b := mustBus(t, Windows{MMIO32Base: 0xc0000000, MMIO32Size: 0x10000000, MMIO64Base: 1 << 36, MMIO64Size: 1 << 30})
	d := newTestDevice(false)
	slot, _ := b.Add(d)
	orig := cfgRead(b, slot, offBAR0, 4)
	if orig != 0xc0000000 || len(d.maps) != 1 || d.maps[0] != 0xc0000000 {
		t.Fatalf("BAR0 %#x maps %v", orig, d.maps)
	}
	// Sizing as Linux does: decode off, write ones, read the mask, restore.
	cfgWrite(b, slot, offCommand, 2, 0)
	cfgWrite(b, slot, offBAR0, 4, 0xffffffff)
	if mask := cfgRead(b, slot, offBAR0, 4); mask != 0xfffff000 {
		t.Errorf("size mask %#x, want 0xfffff000", mask)
	}
	cfgWrite(b, slot, offBAR0, 4, 0xc8000000)
	cfgWrite(b, slot, offCommand, 2, cmdMemory)
	if got := d.maps[len(d.maps)-1]; got != 0xc8000000 {
		t.Errorf("after move, mapped at %#x (history %v)", got, d.maps)
	}
	// MMIO follows the BAR.
	if b.MMIOWrite(0xc0000010, []byte{1}) {
		t.Error("old address still decoded")
	}
	if !b.MMIOWrite(0xc8000010, []byte{7, 8}) || d.lastOff != 0x10 || d.lastData[1] != 8 {
		t.Errorf("write not routed: off %#x data %v", d.lastOff, d.lastData)
	}
	buf := make([]byte, 4)
	if !b.MMIORead(0xc8000ffc, buf) || buf[0] != 0xab {
		t.Error("read not routed")
	}
	if b.MMIORead(0xc8000ffe, buf) {
		t.Error("access crossing the BAR end was routed")
	}
}

func TestBAR64(t *testing.T) {
	b := mustBus(t, Windows{MMIO32Base: 0xc0000000, MMIO32Size: 0x10000000, MMIO64Base: 1 << 36, MMIO64Size: 1 << 30})
	d := newTestDevice(true)
	slot, _ := b.Add(d)
	lo, hi := cfgRead(b, slot, offBAR0, 4), cfgRead(b, slot, offBAR0+4, 4)
	if lo&0x6 != 0x4 || uint64(hi)<<32|uint64(lo&^0xf) != 1<<36 {
		t.Errorf("64-bit BAR %#x:%#x", hi, lo)
	}
	cfgWrite(b, slot, offCommand, 2, 0)
	cfgWrite(b, slot, offBAR0+4, 4, 0xffffffff)
	if m := cfgRead(b, slot, offBAR0+4, 4); m != 0xffffffff {
		t.Errorf("upper sizing mask %#x", m)
	}
}

func TestMSIX(t *testing.T) {
	plat := &fakePlatform{}
	d := newTestDevice(false)
	m, err := NewMSIX(d.cfg, plat, 3, 0, 0x800, 0xc00)
	if err != nil {
		t.Fatal(err)
	}
	cap := uint32(d.cfg.Bytes(offCapPtr, 1)[0])
	if id := d.cfg.Bytes(cap, 1)[0]; id != capMSIX {
		t.Fatalf("capability id %#x", id)
	}
	if ts := binary.LittleEndian.Uint16(d.cfg.Bytes(cap+2, 2)); ts&0x7ff != 2 {
		t.Errorf("table size field %d", ts&0x7ff)
	}
	// Masked (disabled) vector: firing marks it pending.
	m.Fire(1)
	if plat.routes[1].fired != 0 {
		t.Error("fired while MSI-X is disabled")
	}
	pba := make([]byte, 8)
	m.ReadPBA(0, pba)
	if pba[0] != 2 {
		t.Errorf("PBA %#x, want bit 1", pba[0])
	}
	// Program entry 1 and enable: the pending vector is delivered.
	entry := make([]byte, 16)
	binary.LittleEndian.PutUint64(entry[0:], 0xfee01000)
	binary.LittleEndian.PutUint32(entry[8:], 0x4041)
	m.WriteTable(16, entry)
	d.cfg.Write(cap+2, []byte{0, 0x80})
	r := plat.routes[1]
	if r.msg.Address != 0xfee01000 || r.msg.Data != 0x4041 || r.fired != 1 {
		t.Errorf("route %+v", r)
	}
	m.ReadPBA(0, pba)
	if pba[0] != 0 {
		t.Error("pending bit not cleared on delivery")
	}
	m.Fire(1)
	if r.fired != 2 {
		t.Error("live vector did not fire")
	}
	// Function mask holds interrupts back.
	d.cfg.Write(cap+2, []byte{0, 0xc0})
	m.Fire(1)
	if r.fired != 2 {
		t.Error("fired under the function mask")
	}
	m.Fire(99) // out of range: ignored
}

func TestECAM(t *testing.T) {
	b := mustBus(t, Windows{MMIO32Base: 0xc0000000, MMIO32Size: 0x10000000})
	d := newTestDevice(false)
	slot, _ := b.Add(d)
	buf := make([]byte, 4)
	b.ECAMRead(uint64(slot)<<15, buf)
	if binary.LittleEndian.Uint32(buf) != 0x10421af4 {
		t.Errorf("ECAM id read % x", buf)
	}
	b.ECAMRead(uint64(slot)<<15|1<<12, buf)
	if binary.LittleEndian.Uint32(buf) != 0xffffffff {
		t.Error("function 1 answered over ECAM")
	}
	b.ECAMRead(20<<15, buf)
	if binary.LittleEndian.Uint32(buf) != 0xffffffff {
		t.Error("empty slot answered over ECAM")
	}
	// Extended configuration space is empty (reads as ones).
	b.ECAMRead(uint64(slot)<<15|0x100, buf)
	if binary.LittleEndian.Uint32(buf) != 0xffffffff {
		t.Errorf("extended config reads % x", buf)
	}
	b.ECAMWrite(uint64(slot)<<15|offCommand, []byte{0, 0})
	if d.maps[len(d.maps)-1] != 0 {
		t.Error("clearing memory decode over ECAM did not unmap the BAR")
	}
	b.ECAMRead(ECAMSize+8, buf)
}

func mustBus(t *testing.T, w Windows) *Bus {
	t.Helper()
	b, err := NewBus(w)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ioDevice is a function with a memory BAR 0 and a 4-port I/O BAR 1.
type ioDevice struct {
	testDevice
	lastBar int
}

func newIODevice() *ioDevice {
	d := &ioDevice{testDevice: *newTestDevice(false)}
	d.cfg.AddIOBAR(1, 4)
	d.cfg.OnMap = func(bar int, addr uint64) {
		if bar == 1 {
			d.maps = append(d.maps, addr)
		}
	}
	return d
}

func (d *ioDevice) BARWrite(bar int, off uint64, data []byte) {
	d.lastBar = bar
	d.testDevice.BARWrite(bar, off, data)
}

// TestIOBAR: an I/O BAR is placed in the bus's port window with I/O
// decoding on, sizes as a 16-bit I/O BAR, answers port accesses only while
// I/O decoding is on, and follows a move.
func TestIOBAR(t *testing.T) {
	b := mustBus(t, Windows{MMIO32Base: 0xc0000000, MMIO32Size: 0x10000000, IOBase: 0xc000, IOSize: 0x1000})
	d := newIODevice()
	slot, err := b.Add(d)
	if err != nil {
		t.Fatal(err)
	}
	if base, size := b.IOWindow(); base != 0xc000 || size != 0x1000 {
		t.Errorf("IOWindow = %#x, %#x", base, size)
	}
	reg := cfgRead(b, slot, offBAR0+4, 4)
	if reg != 0xc001 {
		t.Fatalf("I/O BAR register %#x, want 0xc001 (port 0xc000, I/O space)", reg)
	}
	if cmd := cfgRead(b, slot, offCommand, 2); cmd&(cmdIO|cmdMemory) != cmdIO|cmdMemory {
		t.Errorf("command %#x: firmware leaves I/O and memory decoding on", cmd)
	}
	if len(d.maps) != 1 || d.maps[0] != 0xc000 {
		t.Fatalf("maps %#x", d.maps)
	}
	b.PIOWrite(0xc002, []byte{1, 2})
	if d.lastBar != 1 || d.lastOff != 2 || !bytes.Equal(d.lastData, []byte{1, 2}) {
		t.Errorf("port write reached bar %d offset %d data %v", d.lastBar, d.lastOff, d.lastData)
	}
	data := make([]byte, 2)
	b.PIORead(0xc004, data) // past the BAR
	if data[0] != 0xff || data[1] != 0xff {
		t.Errorf("an undecoded port reads %v", data)
	}
	// MMIO at the port's number is not the I/O BAR.
	if b.MMIOWrite(0xc000, []byte{1}) {
		t.Error("an MMIO write at 0xc000 reached the I/O BAR")
	}
	// Sizing: all ones read back as the size mask, upper half zero.
	cfgWrite(b, slot, offBAR0+4, 4, 0xffffffff)
	if v := cfgRead(b, slot, offBAR0+4, 4); v != 0xfffd {
		t.Errorf("sized I/O BAR reads %#x, want 0xfffd", v)
	}
	if d.maps[len(d.maps)-1] != 0 {
		t.Errorf("a BAR being sized stays decoded at %#x", d.maps[len(d.maps)-1])
	}
	cfgWrite(b, slot, offBAR0+4, 4, 0xd003) // low bits are not the guest's
	if v := cfgRead(b, slot, offBAR0+4, 4); v != 0xd001 {
		t.Errorf("moved I/O BAR reads %#x, want 0xd001", v)
	}
	if d.maps[len(d.maps)-1] != 0xd000 {
		t.Errorf("maps %#x after the move", d.maps)
	}
	// I/O decoding off: unmapped, and the port no longer answers.
	cmd := cfgRead(b, slot, offCommand, 2)
	cfgWrite(b, slot, offCommand, 2, cmd&^cmdIO)
	if d.maps[len(d.maps)-1] != 0 {
		t.Errorf("maps %#x after I/O decoding was turned off", d.maps)
	}
	d.lastData = nil
	b.PIOWrite(0xd000, []byte{9, 9})
	if d.lastData != nil {
		t.Error("a port write reached a BAR with I/O decoding off")
	}
}

// TestIOBARRefused: a bus without an I/O window cannot place an I/O BAR,
// nor can one have a window outside the port space.
func TestIOBARRefused(t *testing.T) {
	b := mustBus(t, Windows{MMIO32Base: 0xc0000000, MMIO32Size: 0x10000000})
	if _, err := b.Add(newIODevice()); err == nil {
		t.Error("an I/O BAR was placed on a bus without an I/O window")
	}
	for _, w := range []Windows{{IOBase: 0xf000, IOSize: 0x2000}, {IOBase: 0, IOSize: 0x100}} {
		if _, err := NewBus(w); err == nil {
			t.Errorf("NewBus(%+v) accepted a window outside the port space", w)
		}
	}
}
