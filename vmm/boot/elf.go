package boot

import (
	"encoding/binary"
	"fmt"
)

// Segment is one loadable piece of an ELF kernel.
type Segment struct {
	// Addr is the guest physical address (p_paddr).
	Addr uint64
	// Data is the file content; MemSize ≥ len(Data) is the size in memory
	// (the rest is zero, as fresh guest memory already is).
	Data    []byte
	MemSize uint64
}

// maxELFAddr bounds where an ELF kernel may load (its physical image must
// sit in low RAM).
const maxELFAddr = 1 << 32

// ParseELF parses an uncompressed x86-64 vmlinux. It boots through the
// same 64-bit entry as a bzImage (startup_64, with the zero page in RSI),
// but with no decompression in the guest.
func ParseELF(img []byte) (*Kernel, error) {
	k := &Kernel{Version: 0x020f, CmdlineSize: 2048, InitrdAddrMax: 0x7fffffff, Alignment: 0x1000000}
	if err := k.setELF(img); err != nil {
		return nil, err
	}
	return k, nil
}

// setELF makes k boot the ELF kernel img: its loadable segments at their
// physical addresses, entered at its (physical) entry point. Trailing data
// after the ELF file's last part (a bzImage payload's relocation table) is
// ignored.
//
// It reads the file header and the program headers itself, and nothing
// else: debug/elf would parse the section headers too, and link DWARF and
// two decompressors into the VMM, all for the five fields a loader needs.
func (k *Kernel) setELF(img []byte) error {
	h, err := parseELFHeader(img)
	if err != nil {
		return err
	}
	var segs []Segment
	var end uint64
	for i := range uint64(h.phnum) {
		p := readProgHeader(img[h.phoff+i*elfPhdrSize:])
		if p.typ != elfPTLoad || p.memsz == 0 {
			continue
		}
		if p.filesz > p.memsz || p.off+p.filesz > uint64(len(img)) || p.off+p.filesz < p.off {
			return fmt.Errorf("%w: truncated: a segment needs bytes %d–%d of a %d-byte file", ErrNotKernel, p.off, p.off+p.filesz, len(img))
		}
		if p.paddr < KernelAddr || p.paddr >= maxELFAddr || p.memsz > maxELFAddr-p.paddr {
			return fmt.Errorf("%w: ELF segment at physical %#x (+%#x) is outside [1 MiB, 4 GiB)", ErrNotKernel, p.paddr, p.memsz)
		}
		segs = append(segs, Segment{Addr: p.paddr, Data: img[p.off : p.off+p.filesz], MemSize: p.memsz})
		if e := p.paddr + p.memsz; e > end {
			end = e
		}
	}
	if len(segs) == 0 {
		return fmt.Errorf("%w: the ELF file has no loadable segments", ErrNotKernel)
	}
	// The entry must be inside a loaded segment (physical startup_64).
	ok := false
	low := segs[0].Addr
	for _, s := range segs {
		if h.entry >= s.Addr && h.entry < s.Addr+s.MemSize {
			ok = true
		}
		low = min(low, s.Addr)
	}
	if !ok {
		return fmt.Errorf("%w: ELF entry %#x is not a physical address inside the image", ErrNotKernel, h.entry)
	}
	k.ELF, k.Segments, k.Entry = true, segs, h.entry
	// InitSize is measured from the lowest address, as for a bzImage; the
	// kernel's early page-table and memblock setup want headroom past the
	// image, as init_size gives a bzImage.
	k.PrefAddress = low
	k.InitSize = max(k.InitSize, end-low+16<<20)
	return nil
}

// The ELF64 layout (System V ABI, x86-64 supplement) as far as a loader
// reads it.
const (
	elfMagic      = "\x7fELF"
	elfEhdrSize   = 64
	elfPhdrSize   = 56
	elfClass64    = 2
	elfData2LSB   = 1
	elfTypeExec   = 2
	elfMachineX86 = 62
	elfPTLoad     = 1
	// maxELFProgs bounds the program header table (a vmlinux has five).
	maxELFProgs = 64
)

// elfHeader is what setELF needs of an ELF file header.
type elfHeader struct {
	entry, phoff uint64
	phnum        uint16
}

// elfProg is one program header.
type elfProg struct {
	typ                       uint32
	off, paddr, filesz, memsz uint64
}

// parseELFHeader checks that img starts with the header of a little-endian
// x86-64 ELF executable whose program header table lies inside img.
func parseELFHeader(img []byte) (elfHeader, error) {
	if len(img) < elfEhdrSize || string(img[:4]) != elfMagic {
		return elfHeader{}, fmt.Errorf("%w: not an ELF file either", ErrNotKernel)
	}
	le := binary.LittleEndian
	class, data, typ, machine := img[4], img[5], le.Uint16(img[16:]), le.Uint16(img[18:])
	if class != elfClass64 || data != elfData2LSB || typ != elfTypeExec || machine != elfMachineX86 {
		return elfHeader{}, fmt.Errorf("%w: ELF class %d, data %d, type %d, machine %d is not a little-endian x86-64 executable vmlinux",
			ErrNotKernel, class, data, typ, machine)
	}
	h := elfHeader{entry: le.Uint64(img[24:]), phoff: le.Uint64(img[32:]), phnum: le.Uint16(img[56:])}
	if phentsize := le.Uint16(img[54:]); h.phnum > 0 && phentsize != elfPhdrSize {
		return elfHeader{}, fmt.Errorf("%w: ELF program headers of %d bytes (want %d)", ErrNotKernel, phentsize, elfPhdrSize)
	}
	if h.phnum > maxELFProgs {
		return elfHeader{}, fmt.Errorf("%w: %d ELF program headers (at most %d)", ErrNotKernel, h.phnum, maxELFProgs)
	}
	if tableEnd := h.phoff + uint64(h.phnum)*elfPhdrSize; tableEnd < h.phoff || tableEnd > uint64(len(img)) {
		return elfHeader{}, fmt.Errorf("%w: truncated: the ELF program headers need bytes %d–%d of a %d-byte file", ErrNotKernel, h.phoff, tableEnd, len(img))
	}
	return h, nil
}

// readProgHeader decodes the program header at the start of b (at least
// elfPhdrSize bytes).
func readProgHeader(b []byte) elfProg {
	le := binary.LittleEndian
	return elfProg{
		typ:    le.Uint32(b[0:]),
		off:    le.Uint64(b[8:]),
		paddr:  le.Uint64(b[24:]),
		filesz: le.Uint64(b[32:]),
		memsz:  le.Uint64(b[40:]),
	}
}
