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
	// BARRead and BARWrite handle a guest access at offset inside BAR
	// bar: MMIO, or port I/O for an I/O BAR.
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

// Windows are the address ranges the bus places BARs in: 32-bit and 64-bit
// memory, and ports for I/O BARs. A size of 0 leaves a window out (64-bit
// BARs then go in the 32-bit window; an I/O BAR cannot be placed).
type Windows struct {
	MMIO32Base, MMIO32Size uint64
	MMIO64Base, MMIO64Size uint64
	IOBase, IOSize         uint64
}

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
	io      window
}

// NewBus returns a bus with a host bridge in slot 0 whose devices' BARs are
// placed in the given windows. An I/O window must lie in the 16-bit port
// space.
func NewBus(w Windows) (*Bus, error) {
	if w.IOSize != 0 && (w.IOBase == 0 || w.IOBase+w.IOSize > ioSpaceEnd) {
		return nil, fmt.Errorf("PCI I/O window [%#x, +%#x) is not inside the port space [0x1, 0x10000)", w.IOBase, w.IOSize)
	}
	b := &Bus{
		mmio32: window{base: w.MMIO32Base, size: w.MMIO32Size, next: w.MMIO32Base},
		mmio64: window{base: w.MMIO64Base, size: w.MMIO64Size, next: w.MMIO64Base},
		io:     window{base: w.IOBase, size: w.IOSize, next: w.IOBase},
	}
	b.slots = append(b.slots, hostBridge{NewConfigSpace(0x8086, 0x0d57, 0, 0, 0x060000, 0)})
	return b, nil
}

// IOWindow returns the port range I/O BARs are placed in (size 0: none).
// The bus's PIORead and PIOWrite decode it, besides the configuration
// ports.
func (b *Bus) IOWindow() (base, size uint16) {
	return uint16(b.io.base), uint16(b.io.size)
}

// Add places d in the next free slot, assigns its BARs (32-bit BARs in the
// 32-bit window, 64-bit ones in the 64-bit window, I/O BARs in the I/O
// window), turns on decoding as firmware would, and returns the slot.
func (b *Bus) Add(d Device) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.slots) >= maxSlots {
		return 0, fmt.Errorf("PCI bus 0 is full (%d slots)", maxSlots)
	}
	cfg := d.Config()
	for i, bar := range cfg.BARs() {
		size := bar.Size
		if size == 0 {
			continue
		}
		w := &b.mmio32
		switch {
		case bar.IO:
			if size&(size-1) != 0 || size < 4 || size > 256 {
				return 0, fmt.Errorf("I/O BAR %d size %#x is not a power of two from 4 to 256", i, size)
			}
			w = &b.io
		case size&(size-1) != 0 || size < 16:
			return 0, fmt.Errorf("BAR %d size %#x is not a power of two ≥ 16", i, size)
		case bar.Is64 && b.mmio64.size != 0:
			w = &b.mmio64
		}
		addr, err := w.alloc(size)
		if err != nil {
			return 0, err
		}
		cfg.SetBARAddr(i, addr)
	}
	for _, ch := range cfg.enableDecoding() {
		if cfg.OnMap != nil {
			cfg.OnMap(ch.bar, ch.addr)
		}
	}
	b.slots = append(b.slots, d)
	return len(b.slots) - 1, nil
}

// PIORead handles a guest read of the configuration ports, or of a port in
// an I/O BAR (all ones where none decodes it).
func (b *Bus) PIORead(port uint16, data []byte) {
	if port < ConfigAddressPort || port >= ConfigAddressPort+PortCount {
		if !b.barAccess(port, data, false) {
			for i := range data {
				data[i] = 0xff
			}
		}
		return
	}
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

// PIOWrite handles a guest write of the configuration ports, or of a port
// in an I/O BAR.
func (b *Bus) PIOWrite(port uint16, data []byte) {
	if port < ConfigAddressPort || port >= ConfigAddressPort+PortCount {
		b.barAccess(port, data, true)
		return
	}
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

// barAccess hands a port access to the I/O BAR that decodes port; false if
// none does.
func (b *Bus) barAccess(port uint16, data []byte, write bool) bool {
	return b.dispatch(uint64(port), data, true, write)
}

// MMIORead dispatches a guest read to the BAR that decodes addr; false if
// none does.
func (b *Bus) MMIORead(addr uint64, data []byte) bool {
	return b.dispatch(addr, data, false, false)
}

// MMIOWrite dispatches a guest write; false if no BAR decodes addr.
func (b *Bus) MMIOWrite(addr uint64, data []byte) bool {
	return b.dispatch(addr, data, false, true)
}

func (b *Bus) dispatch(addr uint64, data []byte, io, write bool) bool {
	for _, d := range b.devices() {
		if bar, off, ok := d.Config().find(addr, len(data), io); ok {
			if write {
				d.BARWrite(bar, off, data)
			} else {
				d.BARRead(bar, off, data)
			}
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
