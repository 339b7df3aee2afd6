package smaps

import (
	"os"
	"strings"
	"testing"
)

// sample is an abridged /proc/PID/smaps of a cgo colibri running a VM.
const sample = `00400000-00a46000 r-xp 00000000 08:01 1234                               /bin/colibri
Size:               6424 kB
Rss:                5140 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd ex mr mw me
00a46000-0112a000 r--p 00646000 08:01 1234                               /bin/colibri
Rss:                4560 kB
Anonymous:             0 kB
0112a000-011a8000 rw-p 00d2a000 08:01 1234                               /bin/colibri
Rss:                 376 kB
Anonymous:           120 kB
011a8000-03213000 rw-p 00000000 00:00 0 
Rss:                  96 kB
Anonymous:            96 kB
054d4000-054f5000 rw-p 00000000 00:00 0                                  [heap]
Rss:                   8 kB
18bcd8800000-18bcd9000000 rw-p 00000000 00:00 0 
Rss:                1592 kB
Anonymous:          1592 kB
18bcd9000000-18bcdc000000 ---p 00000000 00:00 0 
Rss:                   0 kB
7f0000000000-7f0010000000 rw-s 00000000 00:01 77                         /memfd:colibri-guest-ram (deleted)
Rss:               65536 kB
7fbaa39ff000-7fbaa3a00000 ---p 00000000 00:00 0 
Rss:                   0 kB
7fbaa3a00000-7fbaa4200000 rw-p 00000000 00:00 0 
Rss:                   8 kB
7fbaf3c36000-7fbaf3cd6000 rw-p 00000000 00:00 0 
Rss:                 160 kB
7fbaf3f71000-7fbaf40c7000 r-xp 00028000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 828 kB
7fbaf411e000-7fbaf4120000 rw-p 001d6000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                   8 kB
7fbaf4120000-7fbaf412d000 rw-p 00000000 00:00 0 
Rss:                  20 kB
7fbaf4130000-7fbaf4133000 rw-s 00000000 00:0f 1055                       anon_inode:kvm-vcpu:0
Rss:                  12 kB
7fbaf4140000-7fbaf4141000 r--p 00000000 08:01 55                         /work/disk image.ext4
Rss:                   4 kB
7fbaf413f000-7fbaf4141000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
7fbaf4150000-7fbaf4160000 rw-p 00000000 00:00 0                          [anon: Go: heap]
Rss:                  64 kB
7ffdb8e32000-7ffdb8e53000 rw-p 00000000 00:00 0                          [stack]
Rss:                  16 kB
`

func TestParseClassify(t *testing.T) {
	ms, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 19 {
		t.Fatalf("%d mappings, want 19", len(ms))
	}
	if m := ms[0]; m.Start != 0x400000 || m.End != 0xa46000 || m.Perms != "r-xp" || m.Path != "/bin/colibri" || m.Rss != 5140<<10 {
		t.Errorf("first mapping %+v", m)
	}
	if m := ms[2]; m.Anonymous != 120<<10 {
		t.Errorf("data's Anonymous = %d", m.Anonymous)
	}
	if p := ms[7].Path; p != "/memfd:colibri-guest-ram (deleted)" {
		t.Errorf("memfd path %q", p)
	}
	if p := ms[15].Path; p != "/work/disk image.ext4" {
		t.Errorf("a path with a space: %q", p)
	}
	kinds := Classify(ms, "/bin/colibri")
	want := []Kind{Text, ROData, Data, BSS, OtherAnon, GoHeap, OtherAnon, Guest, OtherAnon, Stack, OtherAnon,
		Lib, Lib, Lib, Kernel, OtherFile, Kernel, GoHeap, Stack}
	for i, k := range want {
		if kinds[i] != k {
			t.Errorf("mapping %d (%x %s %q): %v, want %v", i, ms[i].Start, ms[i].Perms, ms[i].Path, kinds[i], k)
		}
	}
	if got := Classify(ms, ""); got[0] != Text {
		t.Errorf("without exe, the first mapping is %v, want text", got[0])
	}
	b := Sum(ms, kinds)
	if b.Get(Guest) != 65536<<10 || b.Binary() != (5140+4560+376+96)<<10 {
		t.Errorf("guest %d, binary %d", b.Get(Guest), b.Binary())
	}
	var all uint64
	for _, m := range ms {
		all += m.Rss
	}
	if b.BeyondGuest() != all-65536<<10 {
		t.Errorf("beyond guest %d, want %d", b.BeyondGuest(), all-65536<<10)
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{
		"Rss: 4 kB\n",
		"zzzz-0040 r-xp 0 0 0\n",
		"00500000-00400000 r-xp 0 0 0\n",
		"00400000-00500000 r-xp\n",
		"00400000-00500000 r-xp 0 08:01 1 /x\nRss: 4 MB\n",
		"00400000-00500000 r-xp 0 08:01 1 /x\nRss: -4 kB\n",
	} {
		if _, err := Parse(strings.NewReader(s)); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}

// TestReadSelf: this process's own smaps parse, and its binary is found.
func TestReadSelf(t *testing.T) {
	ms, err := Read(0)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := Sum(ms, Classify(ms, exe))
	if b.Get(Text) == 0 || b.BeyondGuest() == 0 {
		t.Errorf("no text found in this process's %d mappings (%v)", len(ms), b)
	}
}

func TestThreads(t *testing.T) {
	if n := Threads(0); n < 1 {
		t.Errorf("Threads(0) = %d, want at least 1", n)
	}
	if n := Threads(os.Getpid()); n < 1 {
		t.Errorf("Threads(own pid) = %d, want at least 1", n)
	}
	if n := Threads(-1); n != 0 {
		t.Errorf("Threads(-1) = %d, want 0", n)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample)
	f.Add("00400000-00500000 r-xp 00000000 08:01 1 /x\nRss: 4 kB\n")
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := Parse(strings.NewReader(s))
		if err != nil {
			return
		}
		kinds := Classify(ms, "")
		if len(kinds) != len(ms) {
			t.Fatalf("%d kinds for %d mappings", len(kinds), len(ms))
		}
		for i, m := range ms {
			if m.End < m.Start || kinds[i] < 0 || kinds[i] >= numKinds {
				t.Fatalf("mapping %+v kind %v", m, kinds[i])
			}
		}
		_ = Sum(ms, kinds).BeyondGuest()
	})
}
