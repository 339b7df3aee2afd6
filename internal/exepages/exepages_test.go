package exepages

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/colibrivm/colibri/internal/smaps"
)

// marker is read-only data of this test binary.
const marker = "exepages test marker"

func TestReadOnlyFindsTextAndRodata(t *testing.T) {
	segs, err := ReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	pc := reflect.ValueOf(TestReadOnlyFindsTextAndRodata).Pointer()
	data := uintptr(pointerOf(marker))
	var inText, inData bool
	for _, s := range segs {
		if s.Start <= pc && pc < s.End {
			inText = s.Exec
		}
		if s.Start <= data && data < s.End {
			inData = true
		}
	}
	if !inText || !inData {
		t.Fatalf("segments %+v: this function's code %#x in an executable one: %v; a string constant %#x in one: %v", segs, pc, inText, data, inData)
	}
}

// TestReleaseDropsResidentText releases the test binary's read-only pages
// and checks, in /proc/self/smaps, that its text is no longer resident as
// a whole, and that the code still runs (faulted back in).
func TestReleaseDropsResidentText(t *testing.T) {
	before := textRss(t)
	segs, err := ReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	n, err := Release(segs)
	if err != nil {
		t.Fatal(err)
	}
	after := textRss(t)
	t.Logf("released %d KiB; text resident %d → %d KiB", n>>10, before>>10, after>>10)
	if n == 0 || after >= before {
		t.Fatalf("released %d bytes, text resident %d → %d bytes", n, before, after)
	}
	if got := strings.Repeat(marker[:3], 2); got != "exeexe" {
		t.Fatalf("code after release computed %q", got)
	}
}

func textRss(t *testing.T) uint64 {
	t.Helper()
	ms, err := smaps.Read(0)
	if err != nil {
		t.Fatal(err)
	}
	var rss uint64
	for _, m := range ms {
		if m.Perms == "r-xp" && m.FileBacked() {
			rss += m.Rss
		}
	}
	if rss == 0 {
		t.Fatal("no resident executable file mapping in smaps")
	}
	return rss
}

func TestReadOnlySegmentsTable(t *testing.T) {
	// PHDR, R+X load, R load, RW load, as a PIE loaded at a bias of
	// 0x10000.
	table := progTable(
		[4]uint64{ptPhdr, 4, 0x40, 0x150},
		[4]uint64{ptLoad, 5, 0x0, 0x2000},
		[4]uint64{ptLoad, 4, 0x3000, 0x1800},
		[4]uint64{ptLoad, 6, 0x5000, 0x4000},
		[4]uint64{ptLoad, 4, 0x9000, 0}, // empty: skipped
	)
	segs, err := readOnlySegments(table, 0x10040)
	if err != nil {
		t.Fatal(err)
	}
	want := []Segment{{Start: 0x10000, End: 0x12000, Exec: true}, {Start: 0x13000, End: 0x14800}}
	if !reflect.DeepEqual(segs, want) {
		t.Fatalf("got %+v, want %+v", segs, want)
	}
	if _, err := readOnlySegments(progTable([4]uint64{ptLoad, 5, 0, 0x1000}), 0x40); !errors.Is(err, ErrNoProgramHeaders) {
		t.Fatalf("no PT_PHDR: %v", err)
	}
}

// progTable builds a program header table from {type, flags, vaddr,
// memsz} rows.
func progTable(rows ...[4]uint64) []byte {
	b := make([]byte, len(rows)*phdrSize)
	le := binary.LittleEndian
	for i, r := range rows {
		p := b[i*phdrSize:]
		le.PutUint32(p[0:], uint32(r[0]))
		le.PutUint32(p[4:], uint32(r[1]))
		le.PutUint64(p[16:], r[2])
		le.PutUint64(p[40:], r[3])
	}
	return b
}

func pointerOf(s string) uintptr { return uintptr(unsafe.Pointer(unsafe.StringData(s))) }

func TestReleaseAndLogSaysWhat(t *testing.T) {
	var out strings.Builder
	ReleaseAndLog(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if !strings.Contains(out.String(), "start-up pages of the executable released") || !strings.Contains(out.String(), "KiB=") {
		t.Fatalf("logged %q", out.String())
	}
}
