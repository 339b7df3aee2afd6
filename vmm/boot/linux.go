package boot

import (
	"encoding/binary"
	"fmt"

	"github.com/colibrivm/colibri/kvm"
	"github.com/colibrivm/colibri/vmm/memory"
)

// Fixed guest physical addresses of the boot structures.
const (
	GDTAddr      = 0x0500
	ZeroPageAddr = 0x7000
	PML4Addr     = 0x9000
	pdptAddr     = 0xa000
	pdAddr       = 0xb000 // four page directories: 0xb000–0xefff
	CmdlineAddr  = 0x20000
	cmdlineMax   = 0x10000
	// EBDAStart is where the reserved area below 1 MiB begins.
	EBDAStart = 0x9fc00
	// ACPIAddr is where the VMM places the ACPI tables (inside the BIOS
	// area the kernel scans for the RSDP).
	ACPIAddr = 0xe0000
	// KernelAddr is where the protected-mode kernel is loaded.
	KernelAddr = 0x100000
	// entryOffset is the 64-bit entry point relative to KernelAddr.
	entryOffset = 0x200

	bootCS = 0x10
	bootDS = 0x18
)

// E820 entry types.
const (
	E820RAM      = 1
	E820Reserved = 2
	E820ACPI     = 3
)

// E820Entry is one entry of the BIOS memory map the guest sees.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// Params is what Load needs besides the kernel.
type Params struct {
	Kernel  *Kernel
	Initrd  []byte
	Cmdline string
	// RSDPAddr is the guest address of the ACPI RSDP (0: none).
	RSDPAddr uint64
	// Reserved are extra e820 entries (e.g. the PCI ECAM window, which
	// Linux uses only if the e820 map reserves it).
	Reserved []E820Entry
}

// Loaded is where Load put things, and the state the boot vCPU starts in.
type Loaded struct {
	Entry      uint64
	InitrdAddr uint64
	E820       []E820Entry
	Regs       kvm.Regs
}

// MinMemory returns the smallest guest memory in which k and an initrd of
// initrdSize bytes can boot.
func MinMemory(k *Kernel, initrdSize uint64) uint64 {
	top := kernelEnd(k) + pageAlign(initrdSize) + 8<<20 // room for the kernel's early allocations
	return (top + (1<<20 - 1)) &^ (1<<20 - 1)
}

// kernelEnd is the end of what the kernel occupies while it decompresses:
// a relocatable kernel loaded below its preferred address moves itself up
// there first.
func kernelEnd(k *Kernel) uint64 {
	base := uint64(KernelAddr)
	if k.PrefAddress > base {
		base = k.PrefAddress
	}
	return base + k.InitSize
}

func pageAlign(n uint64) uint64 { return (n + 0xfff) &^ 0xfff }

// Load places the kernel, initrd, command line, zero page, page tables and
// GDT in mem and returns the boot vCPU's registers.
func Load(mem *memory.Memory, p Params) (*Loaded, error) {
	k := p.Kernel
	if uint64(len(p.Cmdline))+1 > uint64(k.CmdlineSize) || len(p.Cmdline)+1 > cmdlineMax {
		return nil, fmt.Errorf("kernel command line is %d bytes; this kernel accepts at most %d", len(p.Cmdline), k.CmdlineSize-1)
	}
	regions := mem.Regions()
	lowTop := regions[0].End()
	if need := MinMemory(k, uint64(len(p.Initrd))); mem.Size() < need {
		return nil, fmt.Errorf("guest memory %d MiB is too small for this kernel and initrd: need at least %d MiB", mem.Size()>>20, need>>20)
	}

	out := &Loaded{Entry: KernelAddr + entryOffset}
	zp := make([]byte, 4096)
	le := binary.LittleEndian
	if k.ELF {
		for _, s := range k.Segments {
			if err := mem.Write(s.Addr, s.Data); err != nil {
				return nil, fmt.Errorf("loading a kernel segment (%d MiB) at %#x: %w", len(s.Data)>>20, s.Addr, err)
			}
		}
		out.Entry = k.Entry
		if h := k.setupHeader(); h != nil {
			// A bzImage decompressed by colibri: its own header.
			copy(zp[offSetupSects:], h)
		} else {
			// No setup header to copy: fill in what the kernel reads.
			le.PutUint16(zp[0x1fe:], 0xaa55)
			le.PutUint32(zp[offHeaderMagic:], headerMagic)
			le.PutUint16(zp[offVersion:], k.Version)
			le.PutUint32(zp[offKernelAlignment:], uint32(k.Alignment))
			le.PutUint32(zp[offCmdlineSize:], k.CmdlineSize)
			le.PutUint32(zp[offInitrdAddrMax:], uint32(k.InitrdAddrMax))
		}
	} else {
		if err := mem.Write(KernelAddr, k.Payload); err != nil {
			return nil, fmt.Errorf("loading the kernel (%d MiB) at %#x: %w", len(k.Payload)>>20, KernelAddr, err)
		}
		copy(zp[offSetupSects:], k.setupHeader())
	}
	le.PutUint16(zp[offVidMode:], 0xffff)
	zp[offTypeOfLoader] = 0xff
	zp[offLoadflags] |= loadflagCanUseHeap | loadflagLoadedHigh
	le.PutUint16(zp[offHeapEndPtr:], 0xfe00)
	le.PutUint32(zp[offCmdLinePtr:], CmdlineAddr)
	if p.RSDPAddr != 0 {
		le.PutUint64(zp[0x070:], p.RSDPAddr)
	}

	cmd := append([]byte(p.Cmdline), 0)
	if err := mem.Write(CmdlineAddr, cmd); err != nil {
		return nil, fmt.Errorf("writing the command line: %w", err)
	}

	if len(p.Initrd) > 0 {
		maxEnd := k.InitrdAddrMax + 1
		if maxEnd > lowTop {
			maxEnd = lowTop
		}
		size := uint64(len(p.Initrd))
		if size > maxEnd {
			return nil, fmt.Errorf("initrd (%d MiB) does not fit below %#x in guest memory: use a larger --mem or a smaller initrd", size>>20, maxEnd)
		}
		addr := (maxEnd - size) &^ 0xfff
		if addr < kernelEnd(k) {
			return nil, fmt.Errorf("initrd (%d MiB) does not fit in guest memory (%d MiB) beside the kernel: use a larger --mem", size>>20, mem.Size()>>20)
		}
		if err := mem.Write(addr, p.Initrd); err != nil {
			return nil, fmt.Errorf("loading the initrd at %#x: %w", addr, err)
		}
		le.PutUint32(zp[offRamdiskImage:], uint32(addr))
		le.PutUint32(zp[offRamdiskSize:], uint32(size))
		out.InitrdAddr = addr
	}

	out.E820 = append(e820(regions), p.Reserved...)
	if len(out.E820) > 128 {
		return nil, fmt.Errorf("e820 map has %d entries, the zero page holds 128", len(out.E820))
	}
	zp[0x1e8] = byte(len(out.E820))
	for i, e := range out.E820 {
		o := 0x2d0 + 20*i
		le.PutUint64(zp[o:], e.Addr)
		le.PutUint64(zp[o+8:], e.Size)
		le.PutUint32(zp[o+16:], e.Type)
	}
	if err := mem.Write(ZeroPageAddr, zp); err != nil {
		return nil, fmt.Errorf("writing the zero page: %w", err)
	}
	if err := writePageTables(mem); err != nil {
		return nil, err
	}
	if err := writeGDT(mem); err != nil {
		return nil, err
	}
	out.Regs = kvm.Regs{RIP: out.Entry, RSI: ZeroPageAddr, RFLAGS: 2}
	return out, nil
}

// e820 describes RAM below the EBDA, the reserved BIOS area, and the RAM
// regions above 1 MiB.
func e820(regions []memory.Region) []E820Entry {
	m := []E820Entry{
		{Addr: 0, Size: EBDAStart, Type: E820RAM},
		{Addr: EBDAStart, Size: 0x100000 - EBDAStart, Type: E820Reserved},
	}
	for _, r := range regions {
		start := r.GuestAddr
		if start < 0x100000 {
			start = 0x100000
		}
		if r.End() > start {
			m = append(m, E820Entry{Addr: start, Size: r.End() - start, Type: E820RAM})
		}
	}
	return m
}

// writePageTables identity-maps the first 4 GiB with 2 MiB pages.
func writePageTables(mem *memory.Memory) error {
	const present, rw, huge = 1, 2, 0x80
	if err := mem.PutUint64(PML4Addr, pdptAddr|present|rw); err != nil {
		return fmt.Errorf("writing page tables: %w", err)
	}
	for i := uint64(0); i < 4; i++ {
		if err := mem.PutUint64(pdptAddr+8*i, (pdAddr+0x1000*i)|present|rw); err != nil {
			return fmt.Errorf("writing page tables: %w", err)
		}
	}
	pd := make([]byte, 4*4096)
	for i := uint64(0); i < 2048; i++ {
		binary.LittleEndian.PutUint64(pd[8*i:], i<<21|present|rw|huge)
	}
	if err := mem.Write(pdAddr, pd); err != nil {
		return fmt.Errorf("writing page tables: %w", err)
	}
	return nil
}

// gdt holds null, null, the 64-bit code segment (0x10) and the flat data
// segment (0x18).
var gdt = [4]uint64{0, 0, 0x00af9b000000ffff, 0x00cf93000000ffff}

func writeGDT(mem *memory.Memory) error {
	for i, d := range gdt {
		if err := mem.PutUint64(GDTAddr+8*uint64(i), d); err != nil {
			return fmt.Errorf("writing the GDT: %w", err)
		}
	}
	return nil
}

// LongModeSregs returns sregs (as read from a fresh vCPU) set up for the
// 64-bit entry point: paging on with the identity map, the boot GDT loaded,
// CS/DS/ES/SS flat.
func LongModeSregs(s kvm.Sregs) kvm.Sregs {
	code := kvm.Segment{Base: 0, Limit: 0xffffffff, Selector: bootCS, Typ: 11, Present: 1, S: 1, L: 1, G: 1}
	data := kvm.Segment{Base: 0, Limit: 0xffffffff, Selector: bootDS, Typ: 3, Present: 1, S: 1, DB: 1, G: 1}
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = kvm.Segment{Base: 0, Limit: 0xffff, Typ: 11, Present: 1}
	s.LDT = kvm.Segment{Typ: 2, Present: 1, Limit: 0xffff}
	s.GDT = kvm.Descriptor{Base: GDTAddr, Limit: uint16(len(gdt)*8 - 1)}
	s.IDT = kvm.Descriptor{Base: 0, Limit: 0}
	const (
		cr0PE, cr0ET, cr0NE, cr0PG = 1 << 0, 1 << 4, 1 << 5, 1 << 31
		cr4PAE                     = 1 << 5
		eferLME, eferLMA           = 1 << 8, 1 << 10
	)
	s.CR0 = cr0PE | cr0ET | cr0NE | cr0PG
	s.CR3 = PML4Addr
	s.CR4 = cr4PAE
	s.EFER = eferLME | eferLMA
	return s
}
