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
func (k *Kernel) setELF(img []byte) error {
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return fmt.Errorf("%w: not an ELF file either: %v", ErrNotKernel, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return fmt.Errorf("%w: ELF %v %v %v is not an x86-64 executable vmlinux", ErrNotKernel, f.Class, f.Machine, f.Type)
	}
	var segs []Segment
	var end uint64
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz || p.Off+p.Filesz > uint64(len(img)) || p.Off+p.Filesz < p.Off {
			return fmt.Errorf("%w: truncated: a segment needs bytes %d–%d of a %d-byte file", ErrNotKernel, p.Off, p.Off+p.Filesz, len(img))
		}
		if p.Paddr < KernelAddr || p.Paddr >= maxELFAddr || p.Memsz > maxELFAddr-p.Paddr {
			return fmt.Errorf("%w: ELF segment at physical %#x (+%#x) is outside [1 MiB, 4 GiB)", ErrNotKernel, p.Paddr, p.Memsz)
		}
		segs = append(segs, Segment{Addr: p.Paddr, Data: img[p.Off : p.Off+p.Filesz], MemSize: p.Memsz})
		if e := p.Paddr + p.Memsz; e > end {
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
		if f.Entry >= s.Addr && f.Entry < s.Addr+s.MemSize {
			ok = true
		}
		low = min(low, s.Addr)
	}
	if !ok {
		return fmt.Errorf("%w: ELF entry %#x is not a physical address inside the image", ErrNotKernel, f.Entry)
	}
	k.ELF, k.Segments, k.Entry = true, segs, f.Entry
	// InitSize is measured from the lowest address, as for a bzImage; the
	// kernel's early page-table and memblock setup want headroom past the
	// image, as init_size gives a bzImage.
	k.PrefAddress = low
	k.InitSize = max(k.InitSize, end-low+16<<20)
	return nil
}
