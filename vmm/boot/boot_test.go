package boot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/colibrivm/colibri/vmm/memory"
)

// fakeBzImage builds a minimal bzImage: 4 setup sectors plus the boot
// sector, then payloadLen bytes of "kernel".
func fakeBzImage(payloadLen int) []byte {
	const setupSects = 4
	img := make([]byte, (setupSects+1)*512+payloadLen)
	le := binary.LittleEndian
	img[offSetupSects] = setupSects
	le.PutUint16(img[0x1fe:], 0xaa55)
	img[offJump] = 0xeb
	img[offJump+1] = 0x6a // header ends at 0x26c
	le.PutUint32(img[offHeaderMagic:], headerMagic)
	le.PutUint16(img[offVersion:], 0x020f)
	le.PutUint32(img[offSyssize:], uint32(payloadLen/16))
	le.PutUint32(img[offInitrdAddrMax:], 0x7fffffff)
	le.PutUint32(img[offKernelAlignment:], 0x200000)
	img[offRelocatable] = 1
	le.PutUint16(img[offXloadflags:], xlfKernel64|xlfCanBeLoadedAbove4G)
	le.PutUint32(img[offCmdlineSize:], 2047)
	le.PutUint64(img[offPrefAddress:], 0x1000000)
	le.PutUint32(img[offInitSize:], 8<<20)
	for i := (setupSects + 1) * 512; i < len(img); i++ {
		img[i] = byte(i)
	}
	return img
}

func TestParseBzImage(t *testing.T) {
	img := fakeBzImage(64 << 10)
	k, err := ParseBzImage(img)
	if err != nil {
		t.Fatal(err)
	}
	if k.Version != 0x020f || k.InitSize != 8<<20 || k.PrefAddress != 0x1000000 || !k.Relocatable || k.CmdlineSize != 2047 {
		t.Errorf("parsed %+v", k)
	}
	if len(k.Payload) != 64<<10 || len(k.Setup) != 5*512 {
		t.Errorf("payload %d setup %d", len(k.Payload), len(k.Setup))
	}
	if h := k.setupHeader(); len(h) != 0x26c-offSetupSects {
		t.Errorf("setup header is %d bytes", len(h))
	}
}

func TestParseBzImageRejects(t *testing.T) {
	mutate := func(f func([]byte) []byte) []byte { return f(fakeBzImage(64 << 10)) }
	cases := map[string]struct {
		img  []byte
		want string
	}{
		"empty":       {nil, "too short"},
		"elf":         {append([]byte("\x7fELF"), make([]byte, 4096)...), "HdrS"},
		"no magic":    {mutate(func(b []byte) []byte { b[offHeaderMagic] = 0; return b }), "HdrS"},
		"old":         {mutate(func(b []byte) []byte { b[offVersion] = 0x0b; return b }), "older than 2.12"},
		"32-bit only": {mutate(func(b []byte) []byte { b[offXloadflags] = 0; return b }), "64-bit"},
		"truncated":   {mutate(func(b []byte) []byte { return b[:len(b)-100] }), "truncated"},
		"only setup":  {mutate(func(b []byte) []byte { return b[:5*512] }), "truncated"},
	}
	for name, tc := range cases {
		_, err := ParseBzImage(tc.img)
		if !errors.Is(err, ErrNotKernel) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ErrNotKernel mentioning %q", name, err, tc.want)
		}
	}
}

func newMem(t *testing.T, size uint64) *memory.Memory {
	t.Helper()
	m, err := memory.New(size, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestLoad(t *testing.T) {
	k, err := ParseBzImage(fakeBzImage(1 << 20))
	if err != nil {
		t.Fatal(err)
	}
	mem := newMem(t, 128<<20)
	initrd := bytes.Repeat([]byte{0xab}, 3<<20+5)
	l, err := Load(mem, Params{Kernel: k, Initrd: initrd, Cmdline: "console=ttyS0 quiet", RSDPAddr: 0xe0000})
	if err != nil {
		t.Fatal(err)
	}
	if l.Regs.RIP != KernelAddr+0x200 || l.Regs.RSI != ZeroPageAddr {
		t.Errorf("regs %+v", l.Regs)
	}
	got := make([]byte, len(k.Payload))
	mem.Read(KernelAddr, got)
	if !bytes.Equal(got, k.Payload) {
		t.Error("kernel payload not at 1 MiB")
	}
	if l.InitrdAddr%4096 != 0 || l.InitrdAddr+uint64(len(initrd)) > 128<<20 || l.InitrdAddr < kernelEnd(k) {
		t.Errorf("initrd at %#x", l.InitrdAddr)
	}
	gotInitrd := make([]byte, len(initrd))
	mem.Read(l.InitrdAddr, gotInitrd)
	if !bytes.Equal(gotInitrd, initrd) {
		t.Error("initrd content differs")
	}
	zp := make([]byte, 4096)
	mem.Read(ZeroPageAddr, zp)
	le := binary.LittleEndian
	if le.Uint32(zp[offRamdiskImage:]) != uint32(l.InitrdAddr) || le.Uint32(zp[offRamdiskSize:]) != uint32(len(initrd)) {
		t.Error("zero page ramdisk fields wrong")
	}
	if le.Uint32(zp[offCmdLinePtr:]) != CmdlineAddr || le.Uint64(zp[0x70:]) != 0xe0000 || zp[offTypeOfLoader] != 0xff {
		t.Error("zero page cmdline/rsdp/loader fields wrong")
	}
	if le.Uint32(zp[offHeaderMagic:]) != headerMagic {
		t.Error("setup header not copied into the zero page")
	}
	cmd := make([]byte, 20)
	mem.Read(CmdlineAddr, cmd)
	if string(cmd) != "console=ttyS0 quiet\x00" {
		t.Errorf("cmdline %q", cmd)
	}
	n := int(zp[0x1e8])
	var ram uint64
	for i := 0; i < n; i++ {
		o := 0x2d0 + 20*i
		if le.Uint32(zp[o+16:]) == E820RAM {
			ram += le.Uint64(zp[o+8:])
		}
	}
	if want := uint64(128<<20) - (0x100000 - EBDAStart); ram != want {
		t.Errorf("e820 RAM %d, want %d", ram, want)
	}
	// The identity map covers the kernel and the boot structures.
	pml4, _ := mem.Uint64(PML4Addr)
	pd1, _ := mem.Uint64(pdAddr + 8)
	if pml4&^0xfff != pdptAddr || pd1 != 1<<21|0x83 {
		t.Errorf("page tables: pml4 %#x pd[1] %#x", pml4, pd1)
	}
}

func TestLoadRejects(t *testing.T) {
	k, _ := ParseBzImage(fakeBzImage(1 << 20))
	mem := newMem(t, 32<<20)
	if _, err := Load(mem, Params{Kernel: k, Initrd: make([]byte, 30<<20)}); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("huge initrd: %v", err)
	}
	if _, err := Load(mem, Params{Kernel: k, Cmdline: strings.Repeat("x", 3000)}); err == nil || !strings.Contains(err.Error(), "command line") {
		t.Errorf("long cmdline: %v", err)
	}
}

func TestE820AboveHole(t *testing.T) {
	regions := []memory.Region{{GuestAddr: 0, Size: memory.MMIOHoleStart}, {GuestAddr: memory.MMIOHoleEnd, Size: 1 << 30}}
	m := e820(regions)
	last := m[len(m)-1]
	if last.Addr != memory.MMIOHoleEnd || last.Size != 1<<30 || last.Type != E820RAM {
		t.Errorf("high RAM entry %+v", last)
	}
}

func FuzzParseBzImage(f *testing.F) {
	f.Add(fakeBzImage(4096))
	f.Add([]byte{})
	f.Add(fakeBzImage(4096)[:0x300])
	f.Add(fakeVmlinux(512, 4096, 0x1000000, 0x1000000))
	f.Add(fakeCompressedBzImage(gzipPayload(f, fakeVmlinux(512, 4096, 0x1000000, 0x1000000))))
	f.Fuzz(func(t *testing.T, img []byte) {
		if k, err := Parse(img); err == nil && k.ELF {
			for _, s := range k.Segments {
				if s.Addr < KernelAddr || s.Addr+s.MemSize > maxELFAddr || uint64(len(s.Data)) > s.MemSize {
					t.Fatalf("accepted segment %#x +%#x (%d bytes)", s.Addr, s.MemSize, len(s.Data))
				}
			}
		}
		k, err := ParseBzImage(img)
		if err != nil {
			return
		}
		if len(k.Setup)+len(k.Payload) != len(img) {
			t.Fatalf("setup+payload %d+%d != %d", len(k.Setup), len(k.Payload), len(img))
		}
		_ = k.setupHeader()
	})
}

// fakeVmlinux builds a minimal x86-64 ELF executable with one PT_LOAD
// segment at physical 16 MiB and its entry at the segment's start.
func fakeVmlinux(filesz, memsz uint64, paddr, entry uint64) []byte {
	const ehsize, phsize = 64, 56
	img := make([]byte, 0x1000+filesz)
	le := binary.LittleEndian
	copy(img, "\x7fELF")
	img[4], img[5], img[6] = 2, 1, 1 // 64-bit, little-endian, version 1
	le.PutUint16(img[16:], 2)        // ET_EXEC
	le.PutUint16(img[18:], 62)       // EM_X86_64
	le.PutUint32(img[20:], 1)
	le.PutUint64(img[24:], entry)
	le.PutUint64(img[32:], ehsize) // phoff
	le.PutUint16(img[52:], ehsize)
	le.PutUint16(img[54:], phsize)
	le.PutUint16(img[56:], 1) // phnum
	ph := img[ehsize:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5)
	le.PutUint64(ph[8:], 0x1000) // offset
	le.PutUint64(ph[16:], 0xffffffff81000000)
	le.PutUint64(ph[24:], paddr)
	le.PutUint64(ph[32:], filesz)
	le.PutUint64(ph[40:], memsz)
	le.PutUint64(ph[48:], 0x200000)
	for i := uint64(0); i < filesz; i++ {
		img[0x1000+i] = byte(i*7 + 1)
	}
	return img
}

func TestELF(t *testing.T) {
	img := fakeVmlinux(8192, 1<<20, 0x1000000, 0x1000000)
	k, err := Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if !k.ELF || k.Entry != 0x1000000 || len(k.Segments) != 1 || k.PrefAddress != 0x1000000 {
		t.Fatalf("parsed %+v", k)
	}
	mem := newMem(t, 64<<20)
	l, err := Load(mem, Params{Kernel: k, Cmdline: "console=ttyS0", Initrd: []byte("initrd")})
	if err != nil {
		t.Fatal(err)
	}
	if l.Regs.RIP != 0x1000000 || l.Regs.RSI != ZeroPageAddr {
		t.Errorf("regs %+v", l.Regs)
	}
	got := make([]byte, 8192)
	mem.Read(0x1000000, got)
	if !bytes.Equal(got, img[0x1000:0x1000+8192]) {
		t.Error("segment not loaded at its physical address")
	}
	zp := make([]byte, 4096)
	mem.Read(ZeroPageAddr, zp)
	if binary.LittleEndian.Uint32(zp[offHeaderMagic:]) != headerMagic || binary.LittleEndian.Uint16(zp[0x1fe:]) != 0xaa55 {
		t.Error("zero page lacks the boot signature and HdrS for an ELF kernel")
	}
	if l.InitrdAddr < 0x1000000+1<<20 {
		t.Errorf("initrd at %#x overlaps the kernel", l.InitrdAddr)
	}
}

func TestELFRejects(t *testing.T) {
	mutate := func(f func([]byte) []byte) []byte { return f(fakeVmlinux(8192, 8192, 0x1000000, 0x1000000)) }
	cases := map[string][]byte{
		"truncated":       mutate(func(b []byte) []byte { return b[:0x1100] }),
		"32-bit":          mutate(func(b []byte) []byte { b[4] = 1; return b }),
		"arm64":           mutate(func(b []byte) []byte { b[18] = 183; return b }),
		"below 1 MiB":     fakeVmlinux(8192, 8192, 0x1000, 0x1000),
		"above 4 GiB":     fakeVmlinux(8192, 8192, 1<<33, 1<<33),
		"entry elsewhere": fakeVmlinux(8192, 8192, 0x1000000, 0x5000000),
		"big-endian":      mutate(func(b []byte) []byte { b[5] = 2; return b }),
		"shared object":   mutate(func(b []byte) []byte { b[16] = 3; return b }),
		"short header":    mutate(func(b []byte) []byte { return b[:40] }),
		"phentsize":       mutate(func(b []byte) []byte { b[54] = 32; return b }),
		"phnum 65":        mutate(func(b []byte) []byte { b[56] = 65; return b }),
		"phoff past end":  mutate(func(b []byte) []byte { b[32+5] = 1; return b }),
		"phoff wraps":     mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[32:], ^uint64(0)-8); return b }),
		"no PT_LOAD":      mutate(func(b []byte) []byte { b[64] = 4; return b }),
	}
	for name, img := range cases {
		if _, err := Parse(img); !errors.Is(err, ErrNotKernel) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzELFAgainstDebugELF: where both setELF's own reader and the
// standard library's accept a file, they agree on the entry point and
// on every loadable segment.
func FuzzELFAgainstDebugELF(f *testing.F) {
	f.Add(fakeVmlinux(512, 4096, 0x1000000, 0x1000000))
	f.Add(fakeVmlinux(8192, 1<<20, 0x2000000, 0x2000100))
	f.Fuzz(func(t *testing.T, img []byte) {
		k, err := ParseELF(img)
		if err != nil {
			return
		}
		ef, err := elf.NewFile(bytes.NewReader(img))
		if err != nil {
			return // debug/elf also checks the section headers, which a loader ignores
		}
		if k.Entry != ef.Entry {
			t.Fatalf("entry %#x, debug/elf %#x", k.Entry, ef.Entry)
		}
		var loads []*elf.Prog
		for _, p := range ef.Progs {
			if p.Type == elf.PT_LOAD && p.Memsz > 0 {
				loads = append(loads, p)
			}
		}
		if len(loads) != len(k.Segments) {
			t.Fatalf("%d segments, debug/elf %d", len(k.Segments), len(loads))
		}
		for i, s := range k.Segments {
			p := loads[i]
			if s.Addr != p.Paddr || s.MemSize != p.Memsz || uint64(len(s.Data)) != p.Filesz ||
				(p.Filesz > 0 && &s.Data[0] != &img[p.Off]) {
				t.Fatalf("segment %d: %#x +%#x (%d bytes), debug/elf %#x +%#x (%d bytes at %d)", i, s.Addr, s.MemSize, len(s.Data), p.Paddr, p.Memsz, p.Filesz, p.Off)
			}
		}
	})
}
