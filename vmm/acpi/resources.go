package acpi

import "encoding/binary"

// Resource descriptors for _CRS buffers (ACPI 6.5, section 6.4).
type resources struct{ b []byte }

// io appends a 16-bit-decode fixed I/O port range (small item 0x47).
func (r *resources) io(base uint16, length uint8) *resources {
	r.b = append(r.b, 0x47, 1, byte(base), byte(base>>8), byte(base), byte(base>>8), 1, length)
	return r
}

// irq appends an edge-triggered, active-high IRQ (small item 0x22).
func (r *resources) irq(n uint8) *resources {
	mask := uint16(1) << n
	r.b = append(r.b, 0x22, byte(mask), byte(mask>>8))
	return r
}

// Address space resource types.
const (
	spaceMemory = 0
	spaceIO     = 1
	spaceBus    = 2
)

// General flags of a producer window with fixed bounds.
const windowFlags = 0x0c // MinFixed | MaxFixed, positive decode, producer

// word appends a Word Address Space descriptor (large item 0x88).
func (r *resources) word(space, typeFlags uint8, min, max uint16) *resources {
	r.b = append(r.b, 0x88, 13, 0, space, windowFlags, typeFlags)
	for _, v := range []uint16{0, min, max, 0, max - min + 1} {
		r.b = binary.LittleEndian.AppendUint16(r.b, v)
	}
	return r
}

// dword appends a DWord Address Space descriptor (large item 0x87).
func (r *resources) dword(space, typeFlags uint8, min, max uint32) *resources {
	r.b = append(r.b, 0x87, 23, 0, space, windowFlags, typeFlags)
	for _, v := range []uint32{0, min, max, 0, max - min + 1} {
		r.b = binary.LittleEndian.AppendUint32(r.b, v)
	}
	return r
}

// qword appends a QWord Address Space descriptor (large item 0x8a).
func (r *resources) qword(space, typeFlags uint8, min, max uint64) *resources {
	r.b = append(r.b, 0x8a, 43, 0, space, windowFlags, typeFlags)
	for _, v := range []uint64{0, min, max, 0, max - min + 1} {
		r.b = binary.LittleEndian.AppendUint64(r.b, v)
	}
	return r
}

// end appends the End Tag with a zero checksum ("treat as valid").
func (r *resources) end() []byte { return append(r.b, 0x79, 0) }
