package memory

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
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

// TestGuestMemoryNotDumped: the guest's memory carries MADV_DONTDUMP ("dd"
// in its smaps VmFlags), so a core dump of colibri holds none of it.
func TestGuestMemoryNotDumped(t *testing.T) {
	m, err := New(16<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	start := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&m.Host()[0])))
	inMapping := false
	for _, line := range strings.Split(string(smaps), "\n") {
		if strings.HasPrefix(line, start) {
			inMapping = true
			continue
		}
		if inMapping && strings.HasPrefix(line, "VmFlags:") {
			if !strings.Contains(line+" ", " dd ") {
				t.Fatalf("guest memory's VmFlags lack dd (MADV_DONTDUMP): %s", line)
			}
			return
		}
	}
	t.Fatalf("no mapping starting at %s in smaps", start)
}

// TestHugePagesReservedUpFront: guest memory on huge pages is refused at
// New when the pool cannot hold it (it used to be mapped MAP_NORESERVE and
// killed later with SIGBUS), and works when the pool can.
func TestHugePagesReservedUpFront(t *testing.T) {
	free := hugePagesFree(t)
	// One more 2 MiB page than the pool has free.
	size := uint64(free+1) * (2 << 20)
	size = max(size, MinSize+(2<<20))
	m, err := New(size, Options{HugePages: true})
	if err == nil {
		m.Close()
		t.Fatalf("%d MiB of huge pages with %d free: accepted", size>>20, free)
	}
	if !strings.Contains(err.Error(), "nr_hugepages") {
		t.Fatalf("error does not say what to do: %v", err)
	}
	if free >= 8 {
		m, err := New(16<<20, Options{HugePages: true})
		if err != nil {
			t.Fatalf("16 MiB of huge pages with %d free: %v", free, err)
		}
		m.Close()
	} else {
		t.Logf("only %d huge pages free here: the accepting half is not run", free)
	}
}

func hugePagesFree(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "HugePages_Free:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no HugePages_Free in /proc/meminfo")
	return 0
}
