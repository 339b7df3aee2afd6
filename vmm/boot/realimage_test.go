package boot

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/colibrivm/colibri/internal/testenv"
)

// TestDebianBzImage decompresses the stock Debian bzImage on the host and
// checks that the result is byte for byte the vmlinux 'make images'
// extracted from it (with the kernel's own extract-vmlinux method), and
// that booting it enters the same ELF as the vmlinux.
func TestDebianBzImage(t *testing.T) {
	dir := testenv.Images(t)
	bz, err := os.ReadFile(filepath.Join(dir, "vmlinuz"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, "vmlinux"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseBzImage(bz)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := compressedPayload(k.Setup, k.Payload)
	if err != nil {
		t.Fatal(err)
	}
	format := payloadFormat(payload)
	got, err := decompressPayload(format, payload, min(MaxKernelSize, k.InitSize))
	if err != nil {
		t.Fatalf("%s: %v", format, err)
	}
	if !bytes.HasPrefix(got, want) && !bytes.Equal(got, want) {
		t.Fatalf("decompressed %s kernel (%d bytes) differs from the vmlinux (%d bytes)", format, len(got), len(want))
	}
	t.Logf("%s payload of %d bytes -> %d bytes", format, len(payload), len(got))

	// Through ParseWith and a cache: the same segments and entry as the
	// vmlinux, the bzImage's own header kept for the zero page.
	vk, err := ParseELF(want)
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	for _, cached := range []bool{false, true} {
		k, err := ParseWith(bz, Options{CacheDir: cache})
		if err != nil {
			t.Fatal(err)
		}
		if !k.Decompressed || k.Cached != cached || k.Compression != XZ || k.Entry != vk.Entry ||
			len(k.Segments) != len(vk.Segments) || k.Version != 0x020f || len(k.setupHeader()) == 0 {
			t.Fatalf("cached=%v: %s; entry %#x, %d segments", cached, k.Note, k.Entry, len(k.Segments))
		}
		for i, s := range k.Segments {
			if s.Addr != vk.Segments[i].Addr || s.MemSize != vk.Segments[i].MemSize || !bytes.Equal(s.Data, vk.Segments[i].Data) {
				t.Fatalf("segment %d differs from the vmlinux's", i)
			}
		}
		if MinMemory(k, 0) < MinMemory(vk, 0) {
			t.Errorf("the bzImage's kernel needs %d bytes, less than the vmlinux's %d", MinMemory(k, 0), MinMemory(vk, 0))
		}
	}
	// Without a cache an xz kernel is the guest's to decompress.
	if k, err := Parse(bz); err != nil || k.ELF || !strings.Contains(k.Note, "only with one") {
		t.Errorf("Parse without a cache: %v %+v", err, k.Note)
	}
}

func debianBzImage(b *testing.B) []byte {
	bz, err := os.ReadFile(filepath.Join(testenv.Images(b), "vmlinuz"))
	if err != nil {
		b.Fatal(err)
	}
	return bz
}

// BenchmarkDebianDecompress is the cold path: the whole of Debian's xz
// kernel decompressed on the host (no cache).
func BenchmarkDebianDecompress(b *testing.B) {
	bz := debianBzImage(b)
	b.SetBytes(int64(len(bz)))
	for b.Loop() {
		k, err := ParseWith(bz, Options{HostFormats: hostFormats})
		if err != nil || !k.Decompressed {
			b.Fatalf("%v %s", err, k.Note)
		}
	}
}

// BenchmarkDebianCached is the warm path: the bzImage hashed and its
// kernel read from the cache and parsed.
func BenchmarkDebianCached(b *testing.B) {
	bz := debianBzImage(b)
	dir := b.TempDir()
	if k, err := ParseWith(bz, Options{CacheDir: dir}); err != nil || !k.Decompressed {
		b.Fatalf("%v %s", err, k.Note)
	}
	b.SetBytes(int64(len(bz)))
	for b.Loop() {
		k, err := ParseWith(bz, Options{CacheDir: dir})
		if err != nil || !k.Cached {
			b.Fatalf("%v %s", err, k.Note)
		}
	}
}

// BenchmarkDebianVmlinux is the uncompressed kernel's path, for
// comparison: reading and parsing the ELF file.
func BenchmarkDebianVmlinux(b *testing.B) {
	p := filepath.Join(testenv.Images(b), "vmlinux")
	for b.Loop() {
		img, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Parse(img); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDebianCacheKey is the part of the warm path that reads no
// kernel: hashing the bzImage for its cache key.
func BenchmarkDebianCacheKey(b *testing.B) {
	bz := debianBzImage(b)
	b.SetBytes(int64(len(bz)))
	for b.Loop() {
		newCache("", bz)
	}
}

// TestELFMatchesDebugELF checks setELF's own reading of the Debian vmlinux
// against the standard library's ELF reader: the same entry and the same
// loadable segments, in order.
func TestELFMatchesDebugELF(t *testing.T) {
	img, err := os.ReadFile(filepath.Join(testenv.Images(t), "vmlinux"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseELF(img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	if k.Entry != f.Entry {
		t.Errorf("entry %#x, debug/elf says %#x", k.Entry, f.Entry)
	}
	var want []Segment
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Memsz > 0 {
			want = append(want, Segment{Addr: p.Paddr, Data: img[p.Off : p.Off+p.Filesz], MemSize: p.Memsz})
		}
	}
	if len(k.Segments) != len(want) || len(want) == 0 {
		t.Fatalf("%d segments, debug/elf finds %d", len(k.Segments), len(want))
	}
	for i, s := range k.Segments {
		w := want[i]
		if s.Addr != w.Addr || s.MemSize != w.MemSize || len(s.Data) != len(w.Data) || &s.Data[0] != &w.Data[0] {
			t.Errorf("segment %d: %#x +%#x (%d bytes), debug/elf: %#x +%#x (%d bytes)", i, s.Addr, s.MemSize, len(s.Data), w.Addr, w.MemSize, len(w.Data))
		}
	}
}
