// Package pci is a PCI bus for x86 guests: configuration mechanism #1 on
// ports 0xcf8–0xcff (bus 0), type-0 configuration spaces with memory and
// I/O BARs and a capability list, and MSI-X tables whose vectors become KVM MSI
// routes through Platform.
package pci

import (
	"encoding/binary"
	"sync"
)

// Standard configuration space offsets.
const (
	offVendor    = 0x00
	offCommand   = 0x04
	offStatus    = 0x06
	offRevision  = 0x08
	offHeader    = 0x0e
	offBAR0      = 0x10
	offSubVendor = 0x2c
	offCapPtr    = 0x34
	offIntLine   = 0x3c
	offIntPin    = 0x3d

	cmdIO     = 1 << 0
	cmdMemory = 1 << 1
	statusCap = 1 << 4

	// ConfigSize is the size of a conventional configuration space.
	ConfigSize = 256
	numBARs    = 6
	firstCap   = 0x40
)

// BARMapper is told when a BAR's guest address, as the guest decodes it,
// changes: addr is 0 while the BAR is unmapped (its space's decoding off).
// An I/O BAR's address is a port number.
type BARMapper func(bar int, addr uint64)

// BAR describes a declared base address register.
type BAR struct {
	// Size is the BAR's size in bytes, 0 for no BAR.
	Size uint64
	// Is64 marks a 64-bit memory BAR (it also uses the next slot); IO an
	// I/O-space BAR.
	Is64, IO bool
}

// ioSpaceEnd is where x86 port space ends: I/O BARs decode 16 bits.
const ioSpaceEnd = 1 << 16

type bar struct {
	BAR
	addr uint64
}

// flags are the read-only low bits of the BAR's register.
func (b *bar) flags() uint32 {
	switch {
	case b.IO:
		return 0x1
	case b.Is64:
		return 0x4
	}
	return 0
}

// ConfigSpace is a type-0 configuration space. Its methods are safe for
// concurrent use.
type ConfigSpace struct {
	mu     sync.Mutex
	data   [ConfigSize]byte
	wmask  [ConfigSize]byte
	bars   [numBARs]bar
	mapped [numBARs]uint64
	next   int
	// OnMap, if set, is called (without the lock held) when a BAR's
	// decoded address changes.
	OnMap BARMapper
	// OnWrite, if set, is called (without the lock held) after every
	// guest write, with its offset and length.
	OnWrite func(offset uint32, length int)
}

// NewConfigSpace returns a configuration space with the given identity.
// class is base class << 16 | subclass << 8 | programming interface.
func NewConfigSpace(vendor, device, subVendor, subDevice uint16, class uint32, revision uint8) *ConfigSpace {
	c := &ConfigSpace{next: firstCap}
	le := binary.LittleEndian
	le.PutUint16(c.data[offVendor:], vendor)
	le.PutUint16(c.data[offVendor+2:], device)
	c.data[offRevision] = revision
	c.data[offRevision+1] = byte(class)
	c.data[offRevision+2] = byte(class >> 8)
	c.data[offRevision+3] = byte(class >> 16)
	le.PutUint16(c.data[offSubVendor:], subVendor)
	le.PutUint16(c.data[offSubVendor+2:], subDevice)
	c.data[offIntPin] = 0 // no INTx: MSI-X only
	// Writable: command (I/O and memory enable, bus master), interrupt
	// line.
	le.PutUint16(c.wmask[offCommand:], 0x0407)
	c.wmask[offIntLine] = 0xff
	return c
}

// AddBAR declares memory BAR i of size bytes (a power of two, ≥ 16); a
// 64-bit BAR also uses slot i+1.
func (c *ConfigSpace) AddBAR(i int, size uint64, is64 bool) {
	c.addBAR(i, BAR{Size: size, Is64: is64})
}

// AddIOBAR declares I/O BAR i of size ports (a power of two, 4 to 256).
func (c *ConfigSpace) AddIOBAR(i int, size uint64) {
	c.addBAR(i, BAR{Size: size, IO: true})
}

func (c *ConfigSpace) addBAR(i int, b BAR) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bars[i] = bar{BAR: b}
	binary.LittleEndian.PutUint32(c.data[offBAR0+4*i:], c.bars[i].flags())
}

// BARs returns the declared BARs (Size 0: none).
func (c *ConfigSpace) BARs() [numBARs]BAR {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [numBARs]BAR
	for i, b := range c.bars {
		out[i] = b.BAR
	}
	return out
}

// SetBARAddr places BAR i at addr (firmware assignment before boot).
func (c *ConfigSpace) SetBARAddr(i int, addr uint64) {
	c.mu.Lock()
	c.setBARAddrLocked(i, addr)
	c.mu.Unlock()
}

func (c *ConfigSpace) setBARAddrLocked(i int, addr uint64) {
	b := &c.bars[i]
	b.addr = addr &^ (b.Size - 1)
	binary.LittleEndian.PutUint32(c.data[offBAR0+4*i:], uint32(b.addr)|b.flags())
	if b.Is64 {
		binary.LittleEndian.PutUint32(c.data[offBAR0+4*(i+1):], uint32(b.addr>>32))
	}
}

// AddCapability appends a capability with the given id and body (the bytes
// after the id and next pointer) and returns its offset. writable marks the
// body bytes the guest may change (nil: none).
func (c *ConfigSpace) AddCapability(id byte, body, writable []byte) uint8 {
	c.mu.Lock()
	defer c.mu.Unlock()
	off := c.next
	c.data[off] = id
	c.data[off+1] = 0
	copy(c.data[off+2:], body)
	copy(c.wmask[off+2:], writable)
	// Link it at the end of the list.
	if c.data[offCapPtr] == 0 {
		c.data[offCapPtr] = byte(off)
	} else {
		p := int(c.data[offCapPtr])
		for c.data[p+1] != 0 {
			p = int(c.data[p+1])
		}
		c.data[p+1] = byte(off)
	}
	c.data[offStatus] |= statusCap
	c.next = (off + 2 + len(body) + 3) &^ 3
	return uint8(off)
}

// Read copies configuration bytes at offset into data; reads beyond the
// space return ones.
func (c *ConfigSpace) Read(offset uint32, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		o := int(offset) + i
		if o < ConfigSize {
			data[i] = c.data[o]
		} else {
			data[i] = 0xff
		}
	}
}

// Bytes returns a copy of count bytes at offset, for device code that
// inspects its own capability.
func (c *ConfigSpace) Bytes(offset uint32, count int) []byte {
	b := make([]byte, count)
	c.Read(offset, b)
	return b
}

// Write applies a guest write, honouring the writable masks and BAR sizing.
func (c *ConfigSpace) Write(offset uint32, data []byte) {
	c.mu.Lock()
	for i, v := range data {
		o := int(offset) + i
		if o >= ConfigSize {
			break
		}
		if o >= offBAR0 && o < offBAR0+4*numBARs {
			continue // handled below as whole registers
		}
		m := c.wmask[o]
		c.data[o] = c.data[o]&^m | v&m
	}
	// BAR registers: merge the written bytes into each touched register,
	// then keep only the address bits the BAR's size allows.
	for i := 0; i < numBARs; i++ {
		reg := uint32(offBAR0 + 4*i)
		if offset+uint32(len(data)) <= reg || offset >= reg+4 {
			continue
		}
		var cur [4]byte
		copy(cur[:], c.data[reg:reg+4])
		for j := range data {
			if o := offset + uint32(j); o >= reg && o < reg+4 {
				cur[o-reg] = data[j]
			}
		}
		c.writeBARLocked(i, binary.LittleEndian.Uint32(cur[:]))
	}
	changes := c.mapChangesLocked()
	onMap, onWrite := c.OnMap, c.OnWrite
	c.mu.Unlock()
	for _, ch := range changes {
		if onMap != nil {
			onMap(ch.bar, ch.addr)
		}
	}
	if onWrite != nil {
		onWrite(offset, len(data))
	}
}

func (c *ConfigSpace) writeBARLocked(i int, v uint32) {
	reg := offBAR0 + 4*i
	// The upper half of a 64-bit BAR?
	if i > 0 && c.bars[i-1].Is64 {
		b := &c.bars[i-1]
		hiMask := uint32(^(b.Size - 1) >> 32)
		binary.LittleEndian.PutUint32(c.data[reg:], v&hiMask)
		b.addr = uint64(v&hiMask)<<32 | b.addr&0xffffffff
		return
	}
	b := &c.bars[i]
	if b.Size == 0 {
		return // unimplemented BAR: reads as zero
	}
	mask := uint32(^(b.Size - 1)) &^ 0xf
	if b.IO {
		// Bits 0–1 are flags; the upper half reads as zero (16-bit
		// decode), which is how a sizing driver learns the size.
		mask = uint32(^(b.Size - 1)) & (ioSpaceEnd - 1) &^ 0x3
	}
	binary.LittleEndian.PutUint32(c.data[reg:], v&mask|b.flags())
	b.addr = b.addr&^0xffffffff | uint64(v&mask)
}

type mapChange struct {
	bar  int
	addr uint64
}

// mapChangesLocked recomputes which BARs are decoded where and returns the
// changes since last time.
func (c *ConfigSpace) mapChangesLocked() []mapChange {
	cmd := binary.LittleEndian.Uint16(c.data[offCommand:])
	var out []mapChange
	for i, b := range c.bars {
		var addr uint64
		if b.usable(cmd) {
			addr = b.addr
		}
		if addr != c.mapped[i] {
			c.mapped[i] = addr
			out = append(out, mapChange{i, addr})
		}
	}
	return out
}

// usable reports whether b decodes at its address with command register
// cmd: its space is enabled, it has an address, and that is not the
// all-ones pattern of a BAR being sized, nor beyond what the space holds.
func (b *bar) usable(cmd uint16) bool {
	if b.Size == 0 || b.addr == 0 {
		return false
	}
	if b.IO {
		return cmd&cmdIO != 0 && b.addr+b.Size <= ioSpaceEnd && b.addr != ^(b.Size-1)&(ioSpaceEnd-1)
	}
	return cmd&cmdMemory != 0 && b.addr+b.Size-1 < 1<<48 && b.addr != ^(b.Size-1)&(1<<32-1)
}

// enableDecoding turns on memory decoding, and I/O decoding if a BAR needs
// it (as firmware would), and returns the resulting BAR mappings.
func (c *ConfigSpace) enableDecoding() []mapChange {
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd := binary.LittleEndian.Uint16(c.data[offCommand:]) | cmdMemory
	for _, b := range c.bars {
		if b.IO {
			cmd |= cmdIO
		}
	}
	binary.LittleEndian.PutUint16(c.data[offCommand:], cmd)
	return c.mapChangesLocked()
}

// Mapped returns BAR i's decoded guest address (0: unmapped).
func (c *ConfigSpace) Mapped(i int) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mapped[i]
}

// find returns the BAR decoding addr (a port if io) and the offset inside
// it.
func (c *ConfigSpace) find(addr uint64, n int, io bool) (int, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, base := range c.mapped {
		if base != 0 && c.bars[i].IO == io && addr >= base && addr+uint64(n) <= base+c.bars[i].Size {
			return i, addr - base, true
		}
	}
	return 0, 0, false
}
