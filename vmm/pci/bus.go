package pci

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// Device is one PCI function on the bus.
type Device interface {
	// Config returns the function's configuration space.
	Config() *ConfigSpace
	// BARRead and BARWrite handle guest MMIO at offset inside BAR bar.
	BARRead(bar int, offset uint64, data []byte)
	BARWrite(bar int, offset uint64, data []byte)
}

// Ports of configuration mechanism #1.
const (
	ConfigAddressPort = 0xcf8
	ConfigDataPort    = 0xcfc
	// PortCount is how many ports from ConfigAddressPort the bus decodes.
	PortCount = 8
	maxSlots  = 32
)

// window hands out naturally aligned BAR addresses.
type window struct {
	base, size, next uint64
}

func (w *window) alloc(size uint64) (uint64, error) {
	addr := (w.next + size - 1) &^ (size - 1)
	if w.size == 0 || addr+size > w.base+w.size {
		return 0, fmt.Errorf("PCI window [%#x, +%#x) has no room for a %#x-byte BAR", w.base, w.size, size)
	}
	w.next = addr + size
	return addr, nil
}

// Bus is PCI bus 0. Devices are added before the guest runs; after that its
// methods are safe for concurrent use by vCPU threads.
type Bus struct {
	mu      sync.Mutex
	address uint32
	slots   []Device
	mmio32  window
	mmio64  window
}

// NewBus returns a bus with a host bridge in slot 0 whose devices' BARs are
// placed in the given 32-bit and 64-bit windows.
func NewBus(mmio32Base, mmio32Size, mmio64Base, mmio64Size uint64) *Bus {
	b := &Bus{
		mmio32: window{base: mmio32Base, size: mmio32Size, next: mmio32Base},
		mmio64: window{base: mmio64Base, size: mmio64Size, next: mmio64Base},
	}
	b.slots = append(b.slots, hostBridge{NewConfigSpace(0x8086, 0x0d57, 0, 0, 0x060000, 0)})
	return b
}

// Add places d in the next free slot, assigns its BARs (32-bit BARs in the
// 32-bit window, 64-bit ones in the 64-bit window), turns on memory decoding
// as firmware would, and returns the slot.
func (b *Bus) Add(d Device) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.slots) >= maxSlots {
		return 0, fmt.Errorf("PCI bus 0 is full (%d slots)", maxSlots)
	}
	cfg := d.Config()
	sizes, is64 := cfg.BARs()
	for i, size := range sizes {
		if size == 0 {
			continue
		}
		if size&(size-1) != 0 || size < 16 {
			return 0, fmt.Errorf("BAR %d size %#x is not a power of two ≥ 16", i, size)
		}
		w := &b.mmio32
		if is64[i] && b.mmio64.size != 0 {
			w = &b.mmio64
		}
		addr, err := w.alloc(size)
		if err != nil {
			return 0, err
		}
		cfg.SetBARAddr(i, addr)
	}
	for _, ch := range cfg.enableMemory() {
		if cfg.OnMap != nil {
			cfg.OnMap(ch.bar, ch.addr)
		}
	}
	b.slots = append(b.slots, d)
	return len(b.slots) - 1, nil
}

// PIORead handles a guest read of the configuration ports.
func (b *Bus) PIORead(port uint16, data []byte) {
	if port >= ConfigAddressPort && port < ConfigDataPort {
		b.mu.Lock()
		var v [4]byte
		binary.LittleEndian.PutUint32(v[:], b.address)
		b.mu.Unlock()
		off := int(port - ConfigAddressPort)
		for i := range data {
			if off+i < 4 {
				data[i] = v[off+i]
			} else {
				data[i] = 0xff
			}
		}
		return
	}
	dev, offset, ok := b.target(port)
	if !ok {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	dev.Config().Read(offset, data)
}

// PIOWrite handles a guest write of the configuration ports.
func (b *Bus) PIOWrite(port uint16, data []byte) {
	if port >= ConfigAddressPort && port < ConfigDataPort {
		b.mu.Lock()
		var v [4]byte
		binary.LittleEndian.PutUint32(v[:], b.address)
		copy(v[port-ConfigAddressPort:], data)
		b.address = binary.LittleEndian.Uint32(v[:])
		b.mu.Unlock()
		return
	}
	if dev, offset, ok := b.target(port); ok {
		dev.Config().Write(offset, data)
	}
}

// target decodes the latched address for a data-port access.
func (b *Bus) target(port uint16) (Device, uint32, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a := b.address
	if a&(1<<31) == 0 || (a>>16)&0xff != 0 || (a>>8)&7 != 0 {
		return nil, 0, false // disabled, another bus, or another function
	}
	slot := int(a>>11) & 0x1f
	if slot >= len(b.slots) {
		return nil, 0, false
	}
	return b.slots[slot], a&0xfc + uint32(port-ConfigDataPort), true
}

// MMIORead dispatches a guest read to the BAR that decodes addr; false if
// none does.
func (b *Bus) MMIORead(addr uint64, data []byte) bool {
	for _, d := range b.devices() {
		if bar, off, ok := d.Config().find(addr, len(data)); ok {
			d.BARRead(bar, off, data)
			return true
		}
	}
	return false
}

// MMIOWrite dispatches a guest write; false if no BAR decodes addr.
func (b *Bus) MMIOWrite(addr uint64, data []byte) bool {
	for _, d := range b.devices() {
		if bar, off, ok := d.Config().find(addr, len(data)); ok {
			d.BARWrite(bar, off, data)
			return true
		}
	}
	return false
}

func (b *Bus) devices() []Device {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.slots
}

// hostBridge is the bus's function 00:00.0.
type hostBridge struct{ cfg *ConfigSpace }

func (h hostBridge) Config() *ConfigSpace       { return h.cfg }
func (hostBridge) BARRead(int, uint64, []byte)  {}
func (hostBridge) BARWrite(int, uint64, []byte) {}
