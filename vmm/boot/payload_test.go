package boot

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// codeVmlinux is a small x86-64 ELF "kernel" whose segment is full of
// CALL/JMP instructions with near targets, the bytes the xz x86 BCJ filter
// rewrites, between runs of other bytes.
func codeVmlinux() []byte {
	const size = 24 << 10
	img := fakeVmlinux(size, 1<<20, 0x1000000, 0x1000000)
	code := img[0x1000 : 0x1000+size]
	x := uint32(1)
	for i := 0; i+5 <= len(code); {
		x = x*1103515245 + 12345
		switch (x >> 16) % 4 {
		case 0, 1: // call/jmp rel32, backwards or forwards
			code[i] = 0xe8 + byte(x>>20&1)
			rel := int32(x>>8&0xffff) - 0x8000
			binary.LittleEndian.PutUint32(code[i+1:], uint32(rel))
			i += 5
		default:
			code[i] = byte(x >> 24)
			i++
		}
	}
	return img
}

// payloadCommands are the kernel build's own commands for each format
// (scripts/Makefile.lib, scripts/xz_wrap.sh); "size" appends the input's
// length as four little-endian bytes, as the build does (gzip carries it
// in its trailer).
var payloadCommands = map[string][]string{
	Bzip2: {"bzip2 -9", "size"},
	LZMA:  {"lzma -9", "size"},
	XZ:    {"xz --check=crc32 --x86 --lzma2=dict=32MiB", "size"},
	LZ4:   {"lz4 -l -9 - -", "size"},
	Zstd:  {"zstd -22 --ultra", "size"},
}

func payloadFile(format string) string { return filepath.Join("testdata", "payload."+format) }

// TestWritePayloads regenerates testdata/payload.* from codeVmlinux with
// the kernel build's commands, when COLIBRI_UPDATE_PAYLOADS=1.
func TestWritePayloads(t *testing.T) {
	if os.Getenv("COLIBRI_UPDATE_PAYLOADS") != "1" {
		t.Skip("set COLIBRI_UPDATE_PAYLOADS=1 to regenerate testdata/payload.* (needs bzip2, lzma, xz, lz4, zstd)")
	}
	elf := codeVmlinux()
	for format, cmd := range payloadCommands {
		c := exec.Command("sh", "-c", cmd[0])
		c.Stdin = bytes.NewReader(elf)
		out, err := c.Output()
		if err != nil {
			t.Fatalf("%s: %v", cmd[0], err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(len(elf)))
		if err := os.WriteFile(payloadFile(format), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// xz with several blocks and the other check types.
	for name, cmd := range map[string]string{
		"xz-blocks-sha256": "xz --check=sha256 --x86 --lzma2=preset=6 --block-size=5000",
		"xz-crc64":         "xz --check=crc64",
		"xz-sizes":         "xz -T2 --block-size=7000 --x86 --lzma2=preset=6", // block headers with both sizes
	} {
		c := exec.Command("sh", "-c", cmd)
		c.Stdin = bytes.NewReader(elf)
		out, err := c.Output()
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(len(elf)))
		if err := os.WriteFile(payloadFile(name), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func gzipPayload(t testing.TB, data []byte) []byte {
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readPayload returns testdata/payload.NAME.
func readPayload(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(payloadFile(name))
	if err != nil {
		t.Fatalf("%v (regenerate with COLIBRI_UPDATE_PAYLOADS=1 go test -run TestWritePayloads)", err)
	}
	return b
}

// fakeCompressedBzImage wraps a compressed kernel in a bzImage the way the
// kernel's build does: setup sectors, then a decompressor stub and the
// payload it locates through payload_offset/payload_length.
func fakeCompressedBzImage(payload []byte) []byte {
	const stub = 1024
	img := fakeBzImage(stub + len(payload) + 64)
	prot := img[5*512:]
	le := binary.LittleEndian
	le.PutUint32(img[offPayloadOffset:], stub)
	le.PutUint32(img[offPayloadLength:], uint32(len(payload)))
	copy(prot[stub:], payload)
	return img
}

func TestPayloadFormats(t *testing.T) {
	elf := codeVmlinux()
	payloads := map[string][]byte{Gzip: gzipPayload(t, elf)}
	for _, f := range []string{Bzip2, LZMA, XZ, LZ4, Zstd, "xz-blocks-sha256", "xz-crc64", "xz-sizes"} {
		payloads[f] = readPayload(t, f)
	}
	all := []string{Gzip, Bzip2, LZMA, XZ, LZ4, Zstd}
	for name, p := range payloads {
		format, _, _ := strings.Cut(name, "-")
		if got := payloadFormat(p); got != format {
			t.Errorf("%s: recognised as %q", name, got)
			continue
		}
		out, err := decompressPayload(format, p, 1<<20)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(out, elf) {
			t.Errorf("%s: decompressed data differs", name)
		}
		k, err := ParseWith(fakeCompressedBzImage(p), Options{HostFormats: all})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !k.ELF || !k.Decompressed || k.Compression != format || k.Entry != 0x1000000 || len(k.Segments) != 1 ||
			!bytes.Equal(k.Segments[0].Data, elf[0x1000:]) {
			t.Errorf("%s: parsed %+v", name, k)
		}
		if !strings.Contains(k.Note, "decompressed by colibri") {
			t.Errorf("%s: note %q", name, k.Note)
		}
	}
}

func TestDecompressedBzImageLoad(t *testing.T) {
	elf := codeVmlinux()
	k, err := ParseWith(fakeCompressedBzImage(gzipPayload(t, elf)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Decompressed {
		t.Fatalf("gzip kernel not decompressed without a cache: %s", k.Note)
	}
	mem := newMem(t, 64<<20)
	l, err := Load(mem, Params{Kernel: k, Cmdline: "console=ttyS0", Initrd: []byte("initrd")})
	if err != nil {
		t.Fatal(err)
	}
	if l.Regs.RIP != 0x1000000 {
		t.Errorf("entry %#x, want the ELF's", l.Regs.RIP)
	}
	got := make([]byte, len(elf)-0x1000)
	mem.Read(0x1000000, got)
	if !bytes.Equal(got, elf[0x1000:]) {
		t.Error("kernel segment not at its physical address")
	}
	// The zero page carries the bzImage's own setup header.
	zp := make([]byte, 4096)
	mem.Read(ZeroPageAddr, zp)
	le := binary.LittleEndian
	if le.Uint32(zp[offInitSize:]) != 8<<20 || le.Uint64(zp[offPrefAddress:]) != 0x1000000 || le.Uint32(zp[offCmdlineSize:]) != 2047 {
		t.Error("zero page does not hold the bzImage's setup header")
	}
	if le.Uint32(zp[offCmdLinePtr:]) != CmdlineAddr || zp[offTypeOfLoader] != 0xff {
		t.Error("loader fields not filled in")
	}
}

func TestPayloadFallback(t *testing.T) {
	elf := codeVmlinux()
	xz := readPayload(t, XZ)
	notELF := gzipPayload(t, bytes.Repeat([]byte("not a kernel "), 1000))
	corrupt := bytes.Clone(xz)
	corrupt[len(corrupt)/2] ^= 0x55
	bigSize := bytes.Clone(xz)
	binary.LittleEndian.PutUint32(bigSize[len(bigSize)-4:], 1<<30)
	short := bytes.Clone(xz)
	binary.LittleEndian.PutUint32(short[len(short)-4:], uint32(len(elf)-1))
	lzo := append([]byte{0x89, 'L', 'Z', 'O', 0, 0x0d, 0x0a, 0x1a, 0x0a}, make([]byte, 64)...)
	all := Options{HostFormats: []string{Gzip, Bzip2, LZMA, XZ, LZ4, Zstd}}
	cases := []struct {
		name    string
		img     []byte
		opts    Options
		note    string
		payload bool // the payload offset is valid
	}{
		{"xz without a cache", fakeCompressedBzImage(xz), Options{}, "decompressed on the host only with one", true},
		{"asked", fakeCompressedBzImage(xz), Options{GuestDecompress: true}, "as asked", true},
		{"lzo", fakeCompressedBzImage(lzo), all, "does not decompress", true},
		{"unknown", fakeCompressedBzImage(make([]byte, 100)), all, "unknown magic", true},
		{"corrupt", fakeCompressedBzImage(corrupt), all, "xz", true},
		{"size over init_size", fakeCompressedBzImage(bigSize), all, "outside", true},
		{"size too small", fakeCompressedBzImage(short), all, "more than", true},
		{"not an ELF inside", fakeCompressedBzImage(notELF), all, "not one colibri boots", true},
		{"no payload fields", fakeBzImage(4096), all, "gives no payload", false},
	}
	for _, c := range cases {
		k, err := ParseWith(c.img, c.opts)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if k.ELF || k.Decompressed || len(k.Payload) == 0 || !strings.Contains(k.Note, c.note) {
			t.Errorf("%s: ELF %v decompressed %v note %q, want the guest's decompressor and a note with %q", c.name, k.ELF, k.Decompressed, k.Note, c.note)
		}
		mem := newMem(t, 64<<20)
		l, err := Load(mem, Params{Kernel: k})
		if err != nil || l.Regs.RIP != KernelAddr+0x200 {
			t.Errorf("%s: falls back to the bzImage entry: %v %#x", c.name, err, l.Regs.RIP)
		}
	}
}

func TestPayloadCache(t *testing.T) {
	dir := t.TempDir()
	elf := codeVmlinux()
	img := fakeCompressedBzImage(readPayload(t, XZ))
	k, err := ParseWith(img, Options{CacheDir: dir})
	if err != nil || !k.Decompressed || k.Cached {
		t.Fatalf("cold: %v %+v", err, k)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || !strings.HasSuffix(ents[0].Name(), cacheSuffix) {
		t.Fatalf("cache holds %v", ents)
	}
	k, err = ParseWith(img, Options{CacheDir: dir})
	if err != nil || !k.Decompressed || !k.Cached || !bytes.Equal(k.Segments[0].Data, elf[0x1000:]) {
		t.Fatalf("warm: %v %+v", err, k)
	}
	// A damaged entry is a miss, decompressed and written again.
	p := filepath.Join(dir, ents[0].Name())
	os.WriteFile(p, []byte("garbage"), 0o644)
	k, err = ParseWith(img, Options{CacheDir: dir})
	if err != nil || !k.Decompressed || k.Cached {
		t.Fatalf("damaged: %v %+v", err, k)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, elf) {
		t.Error("damaged entry not rewritten")
	}
	// An unwritable cache still boots, decompressed, and says why.
	k, err = ParseWith(img, Options{CacheDir: filepath.Join(p, "sub")})
	if err != nil || !k.Decompressed || !strings.Contains(k.Note, "not cached") {
		t.Fatalf("unwritable: %v %+v", err, k)
	}
}

func TestCacheTrim(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < cacheEntries+3; i++ {
		c := newCache(dir, []byte{byte(i)})
		if err := c.put([]byte("kernel")); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != cacheEntries {
		t.Errorf("cache keeps %d entries, want %d", len(ents), cacheEntries)
	}
}

func TestUnBCJx86(t *testing.T) {
	// E8 at 0 with target absolute 0x105 becomes relative 0x100 (position
	// 0, +5); bytes whose top operand byte is not 00/FF stay.
	buf := []byte{0xe8, 0x05, 0x01, 0x00, 0x00, 0x90, 0xe8, 0x11, 0x22, 0x33, 0x44, 0x90}
	unBCJx86(buf, 0)
	want := []byte{0xe8, 0x00, 0x01, 0x00, 0x00, 0x90, 0xe8, 0x11, 0x22, 0x33, 0x44, 0x90}
	if !bytes.Equal(buf, want) {
		t.Errorf("got % x", buf)
	}
}

func FuzzPayload(f *testing.F) {
	f.Add(gzipPayload(f, codeVmlinux()[:4096]))
	for _, name := range []string{Bzip2, LZMA, XZ, LZ4, Zstd, "xz-blocks-sha256", "xz-crc64", "xz-sizes"} {
		if b, err := os.ReadFile(payloadFile(name)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		format := payloadFormat(p)
		out, err := decompressPayload(format, p, 1<<20)
		if err != nil {
			if format == "" && !errors.Is(err, errUnsupported) && len(p) >= 8 {
				t.Fatalf("unknown format, error %v", err)
			}
			return
		}
		if want := binary.LittleEndian.Uint32(p[len(p)-4:]); uint32(len(out)) != want {
			t.Fatalf("decompressed %d bytes, the payload promises %d", len(out), want)
		}
	})
}

// TestCacheConcurrentWriters boots one bzImage from several goroutines at
// once on a cold cache: each decompresses and writes, none sees a partial
// entry, and one complete entry is left.
func TestCacheConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	img := fakeCompressedBzImage(readPayload(t, XZ))
	want := codeVmlinux()
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			k, err := ParseWith(img, Options{CacheDir: dir})
			switch {
			case err != nil:
				errs <- err
			case !k.Decompressed || !bytes.Equal(k.Segments[0].Data, want[0x1000:]):
				errs <- errors.New(k.Note)
			default:
				errs <- nil
			}
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("cache holds %d files, want 1", len(ents))
	}
	if b, _ := os.ReadFile(filepath.Join(dir, ents[0].Name())); !bytes.Equal(b, want) {
		t.Error("cache entry differs from the kernel")
	}
}

// TestFillLater: a slow format's kernel is left to the guest, and
// FillCache then decompresses it into the cache entry's file (through
// fill's shared mapping), which the next parse reads.
func TestFillLater(t *testing.T) {
	dir := t.TempDir()
	img := fakeCompressedBzImage(readPayload(t, XZ))
	k, err := ParseWith(img, Options{CacheDir: dir, FillLater: true})
	if err != nil || k.Decompressed || k.FillCache == nil {
		t.Fatalf("cold: %v %+v", err, k)
	}
	if err := k.FillCache(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || strings.HasPrefix(ents[0].Name(), ".tmp-") {
		t.Fatalf("cache holds %v after the fill", ents)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, ents[0].Name())); !bytes.Equal(b, codeVmlinux()) {
		t.Fatal("the filled entry differs from the kernel")
	}
	k, err = ParseWith(img, Options{CacheDir: dir, FillLater: true})
	if err != nil || !k.Cached || k.FillCache != nil {
		t.Fatalf("after the fill: %v %+v", err, k)
	}
}

// TestCacheFillFails: a decode that fails, and a file system without
// room, leave no entry and no temporary file behind.
func TestCacheFillFails(t *testing.T) {
	dir := t.TempDir()
	c := newCache(dir, []byte("img"))
	if err := c.fill(4096, func(out []byte) error { return errors.New("corrupt") }); err == nil || err.Error() != "corrupt" {
		t.Fatalf("fill with a failing decode: %v", err)
	}
	if err := c.fill(0, func([]byte) error { return nil }); err == nil {
		t.Fatal("fill of 0 bytes accepted")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}

	if os.Geteuid() != 0 {
		t.Skip("the full-file-system case mounts a tmpfs: needs root (make test runs as root)")
	}
	small := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", small).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	defer exec.Command("umount", small).Run()
	c = newCache(small, []byte("img"))
	decoded := false
	err := c.fill(1<<20, func(out []byte) error { decoded = true; return nil })
	if err == nil || !strings.Contains(err.Error(), "allocating 1048576 bytes") || decoded {
		t.Fatalf("fill of 1 MiB into 64 KiB: %v (decode ran: %v)", err, decoded)
	}
	if ents, _ := os.ReadDir(small); len(ents) != 0 {
		t.Fatalf("left behind on the full file system: %v", ents)
	}
}
