package memory

import (
	"errors"
	"testing"
)

func TestLayout(t *testing.T) {
	small := layout(512 << 20)
	if len(small) != 1 || small[0].Size != 512<<20 {
		t.Errorf("512 MiB layout %+v", small)
	}
	big := layout(4 << 30)
	if len(big) != 2 || big[0].End() != MMIOHoleStart || big[1].GuestAddr != MMIOHoleEnd ||
		big[1].Size != 4<<30-MMIOHoleStart || big[1].Offset != MMIOHoleStart {
		t.Errorf("4 GiB layout %+v", big)
	}
}

func TestSliceBounds(t *testing.T) {
	m, err := New(MinSize, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if b, err := m.Slice(0, MinSize); err != nil || len(b) != int(MinSize) {
		t.Errorf("whole memory: %d %v", len(b), err)
	}
	if b, err := m.Slice(MinSize-1, 1); err != nil || len(b) != 1 {
		t.Errorf("last byte: %v", err)
	}
	if b, _ := m.Slice(16, 8); cap(b) != 8 {
		t.Errorf("slice capacity %d lets a device write past its range", cap(b))
	}
	for _, c := range []struct{ gpa, n uint64 }{
		{MinSize, 1}, {MinSize - 1, 2}, {^uint64(0), 2}, {1, ^uint64(0)}, {MMIOHoleStart, 4},
	} {
		if _, err := m.Slice(c.gpa, c.n); !errors.Is(err, ErrOutOfBounds) {
			t.Errorf("Slice(%#x, %#x) = %v", c.gpa, c.n, err)
		}
	}
	if err := m.PutUint32(100, 0xdeadbeef); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.Uint32(100); v != 0xdeadbeef {
		t.Errorf("round trip %#x", v)
	}
	if _, err := m.Uint64(MinSize - 4); err == nil {
		t.Error("read across the end accepted")
	}
}

func TestSizes(t *testing.T) {
	for _, size := range []uint64{0, MinSize - 4096, MaxSize + 1, MinSize + 1} {
		if m, err := New(size, Options{}); err == nil {
			m.Close()
			t.Errorf("New(%d) accepted", size)
		}
	}
	if _, err := New(MinSize+4096, Options{HugePages: true}); err == nil {
		t.Error("huge pages with a size not a multiple of 2 MiB accepted")
	}
}

func TestAtomicIndex(t *testing.T) {
	m, _ := New(MinSize, Options{})
	defer m.Close()
	for _, off := range []uint64{0, 2, 4, 6} {
		b, _ := m.Slice(0x1000+off, 2)
		StoreUint16(b, uint16(0x1234+off))
		if v := LoadUint16(b); v != uint16(0x1234+off) {
			t.Errorf("offset %d: %#x", off, v)
		}
	}
}
