package blk

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
)

type env struct {
	t    *testing.T
	mem  *memory.Memory
	next uint64
}

func newEnv(t *testing.T) *env {
	m, err := memory.New(16<<20, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &env{t: t, mem: m, next: 0x1000}
}

func (e *env) buf(n int) []byte {
	b, err := e.mem.Slice(e.next, uint64(n))
	if err != nil {
		e.t.Fatal(err)
	}
	e.next += uint64(n)
	return b
}

// request builds a chain: header, data segments, status.
func (e *env) request(typ uint32, sector uint64, data [][]byte, write bool) (*virtq.Chain, []byte) {
	hdr := e.buf(headerLen)
	binary.LittleEndian.PutUint32(hdr[0:], typ)
	binary.LittleEndian.PutUint64(hdr[8:], sector)
	c := &virtq.Chain{Segs: []virtq.Seg{{Buf: hdr}}}
	for _, d := range data {
		c.Segs = append(c.Segs, virtq.Seg{Buf: d, Write: write})
	}
	status := e.buf(1)
	status[0] = 0xee
	c.Segs = append(c.Segs, virtq.Seg{Buf: status, Write: true})
	return c, status
}

func image(t *testing.T, sectors int) string {
	p := filepath.Join(t.TempDir(), "disk.img")
	b := make([]byte, sectors*SectorSize)
	for i := range b {
		b[i] = byte(i / SectorSize)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadWriteFlush(t *testing.T) {
	path := image(t, 16)
	b, err := New(Config{Path: path, Serial: "colibri-disk0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	e := newEnv(t)
	if b.Sectors() != 16 {
		t.Fatalf("sectors %d", b.Sectors())
	}
	// Read sectors 2–3 into two segments.
	d1, d2 := e.buf(SectorSize), e.buf(SectorSize)
	c, st := e.request(TypeIn, 2, [][]byte{d1, d2}, true)
	if n := b.serve(c); n != 2*SectorSize+1 || st[0] != StatusOK {
		t.Fatalf("read: written %d status %d", n, st[0])
	}
	if d1[0] != 2 || d2[SectorSize-1] != 3 {
		t.Fatalf("read wrong data %d %d", d1[0], d2[SectorSize-1])
	}
	// Write sector 5.
	w := e.buf(SectorSize)
	copy(w, bytes.Repeat([]byte{0x77}, SectorSize))
	c, st = e.request(TypeOut, 5, [][]byte{w}, false)
	if n := b.serve(c); n != 1 || st[0] != StatusOK {
		t.Fatalf("write: written %d status %d", n, st[0])
	}
	c, st = e.request(TypeFlush, 0, nil, false)
	if b.serve(c); st[0] != StatusOK {
		t.Fatalf("flush status %d", st[0])
	}
	got, _ := os.ReadFile(path)
	if got[5*SectorSize] != 0x77 || got[6*SectorSize-1] != 0x77 || got[6*SectorSize] != 6 {
		t.Error("write did not land on sector 5 only")
	}
	// GET_ID.
	id := e.buf(idLen)
	c, st = e.request(TypeGetID, 0, [][]byte{id}, true)
	if b.serve(c); st[0] != StatusOK || string(id) != "colibri-disk0\x00\x00\x00\x00\x00\x00\x00" {
		t.Errorf("get id %q status %d", id, st[0])
	}
	// Unknown type.
	c, st = e.request(99, 0, nil, false)
	if b.serve(c); st[0] != StatusUnsupp {
		t.Errorf("unknown type status %d", st[0])
	}
}

func TestRejects(t *testing.T) {
	path := image(t, 8)
	ro, err := New(Config{Path: path, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	e := newEnv(t)
	before, _ := os.ReadFile(path)
	w := e.buf(SectorSize)
	c, st := e.request(TypeOut, 0, [][]byte{w}, false)
	if ro.serve(c); st[0] != StatusIOErr {
		t.Errorf("write to read-only disk: status %d", st[0])
	}
	if ro.Features()&featureRO == 0 {
		t.Error("read-only disk does not advertise VIRTIO_BLK_F_RO")
	}
	for _, tc := range []struct {
		name   string
		sector uint64
		n      int
	}{{"past the end", 8, 1}, {"crossing the end", 7, 2}, {"huge sector", 1 << 62, 1}, {"wrapping sector", ^uint64(0), 1}} {
		bufs := [][]byte{}
		for i := 0; i < tc.n; i++ {
			bufs = append(bufs, e.buf(SectorSize))
		}
		c, st := e.request(TypeIn, tc.sector, bufs, true)
		if ro.serve(c); st[0] != StatusIOErr {
			t.Errorf("%s: status %d", tc.name, st[0])
		}
	}
	// Partial sectors.
	c, st = e.request(TypeIn, 0, [][]byte{e.buf(100)}, true)
	if ro.serve(c); st[0] != StatusIOErr {
		t.Errorf("partial sector read: status %d", st[0])
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("read-only image changed")
	}
	if _, err := New(Config{Path: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("missing image accepted")
	}
	if _, err := New(Config{Path: t.TempDir()}); err == nil {
		t.Error("directory accepted as a disk")
	}
}

func TestParseRejects(t *testing.T) {
	e := newEnv(t)
	hdr := e.buf(headerLen)
	cases := map[string]*virtq.Chain{
		"empty":              {},
		"no status":          {Segs: []virtq.Seg{{Buf: hdr}}},
		"short header":       {Segs: []virtq.Seg{{Buf: hdr[:8]}, {Buf: e.buf(1), Write: true}}},
		"writable header":    {Segs: []virtq.Seg{{Buf: hdr, Write: true}, {Buf: e.buf(1), Write: true}}},
		"write with out buf": {Segs: []virtq.Seg{{Buf: hdr}, {Buf: e.buf(512), Write: true}, {Buf: e.buf(1), Write: true}}},
	}
	binary.LittleEndian.PutUint32(hdr, TypeOut)
	for name, c := range cases {
		if _, err := Parse(c, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzParse feeds arbitrary chain shapes and headers to Parse and serve:
// no panic, no I/O outside the image.
func FuzzParse(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, uint8(2), uint16(512), true)
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint8(1), uint16(512), false)
	f.Add([]byte{8, 0, 0, 0}, uint8(3), uint16(7), true)
	f.Fuzz(func(t *testing.T, hdr []byte, nsegs uint8, seglen uint16, write bool) {
		path := filepath.Join(t.TempDir(), "d.img")
		os.WriteFile(path, make([]byte, 4*SectorSize), 0o644)
		b, err := New(Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		e := newEnv(t)
		h := e.buf(len(hdr) + 1)
		copy(h, hdr)
		c := &virtq.Chain{Segs: []virtq.Seg{{Buf: h[:len(hdr)]}}}
		for i := 0; i < int(nsegs%8); i++ {
			c.Segs = append(c.Segs, virtq.Seg{Buf: e.buf(int(seglen % 4096)), Write: write})
		}
		c.Segs = append(c.Segs, virtq.Seg{Buf: e.buf(1), Write: true})
		b.serve(c)
		if st, _ := os.Stat(path); st.Size() != 4*SectorSize {
			t.Fatalf("image grew to %d bytes", st.Size())
		}
	})
}
