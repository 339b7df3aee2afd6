package boot

import (
	"bytes"
	"debug/elf"
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
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return nil, fmt.Errorf("%w: not an ELF file either: %v", ErrNotKernel, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return nil, fmt.Errorf("%w: ELF %v %v %v is not an x86-64 executable vmlinux", ErrNotKernel, f.Class, f.Machine, f.Type)
	}
	k := &Kernel{ELF: true, Entry: f.Entry, Version: 0x020f, CmdlineSize: 2048, InitrdAddrMax: 0x7fffffff, Alignment: 0x1000000}
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz || p.Off+p.Filesz > uint64(len(img)) || p.Off+p.Filesz < p.Off {
			return nil, fmt.Errorf("%w: truncated: a segment needs bytes %d–%d of a %d-byte file", ErrNotKernel, p.Off, p.Off+p.Filesz, len(img))
		}
		if p.Paddr < KernelAddr || p.Paddr >= maxELFAddr || p.Memsz > maxELFAddr-p.Paddr {
			return nil, fmt.Errorf("%w: ELF segment at physical %#x (+%#x) is outside [1 MiB, 4 GiB)", ErrNotKernel, p.Paddr, p.Memsz)
		}
		k.Segments = append(k.Segments, Segment{Addr: p.Paddr, Data: img[p.Off : p.Off+p.Filesz], MemSize: p.Memsz})
		if end := p.Paddr + p.Memsz; end > k.InitSize {
			k.InitSize = end
		}
	}
	if len(k.Segments) == 0 {
		return nil, fmt.Errorf("%w: the ELF file has no loadable segments", ErrNotKernel)
	}
	// The entry must be inside a loaded segment (physical startup_64).
	ok := false
	for _, s := range k.Segments {
		if k.Entry >= s.Addr && k.Entry < s.Addr+s.MemSize {
			ok = true
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: ELF entry %#x is not a physical address inside the image", ErrNotKernel, k.Entry)
	}
	// InitSize is measured from the lowest address, as for a bzImage.
	k.PrefAddress = k.Segments[0].Addr
	for _, s := range k.Segments {
		if s.Addr < k.PrefAddress {
			k.PrefAddress = s.Addr
		}
	}
	k.InitSize -= k.PrefAddress
	// The kernel's early page-table and memblock setup want headroom past
	// the image, as init_size gives a bzImage.
	k.InitSize += 16 << 20
	return k, nil
}

// Parse parses a kernel image: a bzImage or an uncompressed ELF vmlinux.
func Parse(img []byte) (*Kernel, error) {
	if len(img) >= 4 && string(img[:4]) == elf.ELFMAG {
		return ParseELF(img)
	}
	return ParseBzImage(img)
}
