package acpi

import "encoding/binary"

// resources builds a resource template, the buffer _CRS returns
// (ACPI 6.5, section 6.4).
type resources struct{ b []byte }

// Small and large resource item tags.
const (
	tagIRQNoFlags = 0x22 // small item 0x4, length 2
	tagIO         = 0x47 // small item 0x8, length 7
	tagEnd        = 0x79 // small item 0xf, length 1
	tagDWordSpace = 0x87
	tagWordSpace  = 0x88
	tagExtIRQ     = 0x89
	tagQWordSpace = 0x8a
)

// io appends a fixed I/O port range with 16-bit decode: IO(Decode16,
// base, base, 1, length).
func (r *resources) io(base uint16, length uint8) *resources {
	r.b = append(r.b, tagIO, 1)
	r.b = binary.LittleEndian.AppendUint16(r.b, base)
	r.b = binary.LittleEndian.AppendUint16(r.b, base)
	r.b = append(r.b, 1, length)
	return r
}

// irq appends IRQNoFlags() {n}: an edge-triggered, active-high,
// exclusive ISA IRQ.
func (r *resources) irq(n uint8) *resources {
	r.b = binary.LittleEndian.AppendUint16(append(r.b, tagIRQNoFlags), 1<<(n&15))
	return r
}

// Interrupt vector flags of an Extended Interrupt descriptor (ACPI 6.5,
// 6.4.3.6).
const (
	intConsumer  = 1 << 0 // ResourceConsumer: the device uses the interrupt
	intEdge      = 1 << 1 // Edge; clear: Level
	intActiveLow = 1 << 2 // ActiveLow; clear: ActiveHigh
	// Bit 3 (Shared) and bit 4 (wake capable) stay clear.
)

// interrupt appends Interrupt(ResourceConsumer, ...) {gsi}: an Extended
// Interrupt descriptor for one global system interrupt, with the given
// mode and polarity, exclusive, not wake-capable, with no resource source.
func (r *resources) interrupt(gsi uint32, edge, activeLow bool) *resources {
	flags := byte(intConsumer)
	if edge {
		flags |= intEdge
	}
	if activeLow {
		flags |= intActiveLow
	}
	// length 6: flags, table length, one DWord
	r.b = binary.LittleEndian.AppendUint16(append(r.b, tagExtIRQ), 6)
	r.b = append(r.b, flags, 1)
	r.b = binary.LittleEndian.AppendUint32(r.b, gsi)
	return r
}

// Address space resource types.
const (
	spaceMemory = 0
	spaceIO     = 1
	spaceBus    = 2
)

// Type-specific flags.
const (
	ioEntireRange = 3 // ISA and non-ISA ranges
	memReadWrite  = 1 // read-write, non-cacheable
)

// windowFlags are the general flags of a bridge window: ResourceProducer,
// PosDecode, MinFixed, MaxFixed.
const windowFlags = 0x0c

// word appends a Word Address Space descriptor for [min, max].
func (r *resources) word(space, typeFlags uint8, min, max uint16) *resources {
	r.b = binary.LittleEndian.AppendUint16(append(r.b, tagWordSpace), 13)
	r.b = append(r.b, space, windowFlags, typeFlags)
	for _, v := range []uint16{0, min, max, 0, max - min + 1} { // granularity, min, max, translation, length
		r.b = binary.LittleEndian.AppendUint16(r.b, v)
	}
	return r
}

// dword appends a DWord Address Space descriptor for [min, max].
func (r *resources) dword(space, typeFlags uint8, min, max uint32) *resources {
	r.b = binary.LittleEndian.AppendUint16(append(r.b, tagDWordSpace), 23)
	r.b = append(r.b, space, windowFlags, typeFlags)
	for _, v := range []uint32{0, min, max, 0, max - min + 1} {
		r.b = binary.LittleEndian.AppendUint32(r.b, v)
	}
	return r
}

// qword appends a QWord Address Space descriptor for [min, max].
func (r *resources) qword(space, typeFlags uint8, min, max uint64) *resources {
	r.b = binary.LittleEndian.AppendUint16(append(r.b, tagQWordSpace), 43)
	r.b = append(r.b, space, windowFlags, typeFlags)
	for _, v := range []uint64{0, min, max, 0, max - min + 1} {
		r.b = binary.LittleEndian.AppendUint64(r.b, v)
	}
	return r
}

// end returns the template closed by an End Tag whose checksum byte is 0
// ("the template is valid").
func (r *resources) end() []byte { return append(r.b, tagEnd, 0) }
