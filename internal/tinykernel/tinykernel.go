// Package tinykernel writes minimal x86-64 "kernels" for tests of the VMM
// that need a guest but not Linux: ELF executables loaded at 1 MiB and
// entered like a vmlinux (long mode, flat segments, the first 4 GiB
// identity-mapped, no IDT), each a few instructions long.
package tinykernel

import (
	"encoding/binary"
	"os"
	"path/filepath"
)

// Programs.
var (
	// Crash executes ud2: with no IDT the #UD becomes a triple fault.
	Crash = []byte{0x0f, 0x0b}
	// Count increments the quadword at CounterAddr forever.
	Count = []byte{0x48, 0xff, 0x04, 0x25, 0x00, 0x00, 0x00, 0x02, 0xeb, 0xf6}
	// Chatter writes 'x' to the serial port's data register (0x3f8) and
	// increments the quadword at CounterAddr, forever.
	Chatter = []byte{0x66, 0xba, 0xf8, 0x03, 0xb0, 0x78, 0xee,
		0x48, 0xff, 0x04, 0x25, 0x00, 0x00, 0x00, 0x02, 0xeb, 0xef}
	// PowerOff writes S5 to colibri's ACPI sleep-control port 0x600.
	PowerOff = []byte{0x66, 0xba, 0x00, 0x06, 0xb0, 0x34, 0xee, 0xeb, 0xfe}
)

// CounterAddr is the guest physical address Count increments.
const CounterAddr = 0x200_0000

// Image returns code as an ELF executable whose one segment loads at
// 1 MiB and whose entry is the first byte of code.
func Image(code []byte) []byte {
	const base, ehsize, phsize = 0x10_0000, 64, 56
	img := make([]byte, ehsize+phsize, ehsize+phsize+len(code))
	copy(img, "\x7fELF\x02\x01\x01")
	le := binary.LittleEndian
	le.PutUint16(img[16:], 2)  // ET_EXEC
	le.PutUint16(img[18:], 62) // EM_X86_64
	le.PutUint32(img[20:], 1)
	le.PutUint64(img[24:], base+ehsize+phsize) // entry
	le.PutUint64(img[32:], ehsize)             // phoff
	le.PutUint16(img[52:], ehsize)
	le.PutUint16(img[54:], phsize)
	le.PutUint16(img[56:], 1)
	ph := img[ehsize:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // R+X
	le.PutUint64(ph[16:], base)
	le.PutUint64(ph[24:], base)
	size := uint64(ehsize + phsize + len(code))
	le.PutUint64(ph[32:], size)
	le.PutUint64(ph[40:], size)
	le.PutUint64(ph[48:], 0x1000)
	return append(img, code...)
}

// Write writes Image(code) into dir as name and returns its path.
func Write(dir, name string, code []byte) (string, error) {
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, Image(code), 0o644)
}
