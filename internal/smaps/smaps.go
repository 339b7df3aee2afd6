// Package smaps reads a process's memory mappings from /proc/PID/smaps and
// says what each one is (the binary's text, its data, the Go heap, a
// thread's stack, a shared library, guest memory ...), so that resident
// memory can be broken down by what holds it.
package smaps

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mapping is one line range of /proc/PID/smaps.
type Mapping struct {
	// Start and End are the mapping's virtual addresses.
	Start, End uint64
	// Perms is the permission field ("r-xp", "rw-s", ...).
	Perms string
	// Path is the mapped file or pseudo-name ("[stack]",
	// "anon_inode:kvm-vcpu:0", "/memfd:NAME (deleted)"); empty for
	// anonymous memory.
	Path string
	// Rss, Anonymous and Swap are those fields, in bytes.
	Rss, Anonymous, Swap uint64
}

// Size is the mapping's length in bytes.
func (m Mapping) Size() uint64 { return m.End - m.Start }

// FileBacked reports whether the mapping names a file path (the colibri
// binary, a library, a memfd): what VMM overhead reports count as "binary
// and files".
func (m Mapping) FileBacked() bool { return strings.HasPrefix(m.Path, "/") }

// Read reads /proc/PID/smaps (pid 0: this process).
func Read(pid int) ([]Mapping, error) {
	path := "/proc/self/smaps"
	if pid != 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/smaps"
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading smaps: %w", err)
	}
	defer f.Close()
	ms, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return ms, nil
}

// Threads returns the number of threads of process pid (0: this one), 0
// if /proc/PID/status cannot be read.
func Threads(pid int) int {
	path := "/proc/self/status"
	if pid != 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// Parse parses the text of an smaps file.
func Parse(r io.Reader) ([]Mapping, error) {
	var ms []Mapping
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		key, rest, ok := strings.Cut(line, ":")
		if ok && !strings.Contains(key, " ") && !strings.Contains(key, "-") {
			// A field line: "Rss:   123 kB" (or VmFlags).
			if len(ms) == 0 {
				return nil, fmt.Errorf("field %q before any mapping", key)
			}
			m := &ms[len(ms)-1]
			var dst *uint64
			switch key {
			case "Rss":
				dst = &m.Rss
			case "Anonymous":
				dst = &m.Anonymous
			case "Swap":
				dst = &m.Swap
			default:
				continue
			}
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return nil, fmt.Errorf("field %s: %q is not a size in kB", key, rest)
			}
			kb, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil || kb > 1<<44 {
				return nil, fmt.Errorf("field %s: %q is not a size in kB", key, rest)
			}
			*dst = kb << 10
			continue
		}
		m, err := parseHeader(line)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, sc.Err()
}

// parseHeader parses "start-end perms offset dev inode [path]".
func parseHeader(line string) (Mapping, error) {
	var m Mapping
	f := strings.Fields(line)
	if len(f) < 5 {
		return m, fmt.Errorf("mapping line %q: too few fields", line)
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	var err1, err2 error
	m.Start, err1 = strconv.ParseUint(lo, 16, 64)
	m.End, err2 = strconv.ParseUint(hi, 16, 64)
	if !ok || err1 != nil || err2 != nil || m.End < m.Start {
		return m, fmt.Errorf("mapping line %q: bad address range", line)
	}
	m.Perms = f[1]
	if len(f) > 5 {
		// The path is the rest of the line after the inode field; it
		// may hold spaces (" (deleted)").
		idx := 0
		for i := 0; i < 5; i++ {
			idx += strings.Index(line[idx:], f[i]) + len(f[i])
		}
		m.Path = strings.TrimSpace(line[idx:])
	}
	return m, nil
}

// Kind is what a mapping holds.
type Kind int

// The kinds of mapping.
const (
	// OtherAnon is anonymous memory that is none of the below: the Go
	// runtime's off-heap structures (span and arena metadata, per-P
	// caches), the C allocator's heap.
	OtherAnon Kind = iota
	// Text is the binary's executable code.
	Text
	// ROData is the binary's read-only data (Go's rodata, type and
	// function tables, pclntab).
	ROData
	// Data is the binary's initialised writable data (.data).
	Data
	// BSS is the anonymous memory right after the binary's data (.bss,
	// .noptrbss).
	BSS
	// GoHeap is the Go heap's arenas (goroutine stacks included: they are
	// allocated from the heap).
	GoHeap
	// Stack is a thread stack the kernel or the C library made: the main
	// thread's [stack] and pthread stacks (each behind its guard page).
	Stack
	// Lib is a shared library (the C library, the dynamic loader) and
	// its anonymous .bss.
	Lib
	// Kernel is what the kernel maps for the process: the vDSO and its
	// data pages, KVM's per-vCPU kvm_run pages, BPF maps.
	Kernel
	// Guest is guest memory (the colibri-guest-ram memfd).
	Guest
	// OtherFile is any other mapped file.
	OtherFile
	numKinds
)

// Kinds lists every kind, in table order.
func Kinds() []Kind {
	k := make([]Kind, numKinds)
	for i := range k {
		k[i] = Kind(i)
	}
	return k
}

var kindNames = [numKinds]string{
	OtherAnon: "other-anon", Text: "text", ROData: "rodata", Data: "data", BSS: "bss",
	GoHeap: "go-heap", Stack: "stacks", Lib: "libs", Kernel: "kernel", Guest: "guest", OtherFile: "other-files",
}

func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return "kind(" + strconv.Itoa(int(k)) + ")"
	}
	return kindNames[k]
}

// GuestMemoryName is in the name of the memfd that backs guest memory.
const GuestMemoryName = "colibri-guest-ram"

// Go's heap arenas on linux/amd64 are placed at the addresses the runtime
// hints (runtime/malloc.go): 0x00c000000000 upwards, or since Go 1.26 a
// random base below 1<<46, while the kernel puts every other mapping
// (libraries, thread stacks, the runtime's off-heap structures) near the
// top of the address space, and a non-PIE binary and its brk heap sit
// below 4 GiB. Where the kernel names anonymous mappings
// (CONFIG_ANON_VMA_NAME), Go's own names say it directly.
const (
	goHeapLow  = 1 << 32
	goHeapHigh = 1 << 46
)

func inGoHeapRange(addr uint64) bool { return addr >= goHeapLow && addr < goHeapHigh }

// Classify says what each of ms (in address order, as smaps lists them)
// holds. exe is the path of the process's binary (its /proc/PID/exe);
// empty, the first mapping's file is taken to be the binary.
func Classify(ms []Mapping, exe string) []Kind {
	if exe == "" && len(ms) > 0 {
		exe = ms[0].Path
	}
	kinds := make([]Kind, len(ms))
	for i, m := range ms {
		kinds[i] = classifyOne(m, exe)
	}
	// Anonymous mappings that extend a file's writable segment are its
	// .bss: the binary's, or a library's.
	for i := 1; i < len(ms); i++ {
		prev, m := ms[i-1], ms[i]
		if kinds[i] != OtherAnon || m.Path != "" || prev.End != m.Start || !strings.HasPrefix(prev.Perms, "rw") {
			continue
		}
		switch kinds[i-1] {
		case Data, BSS:
			kinds[i] = BSS
		case Lib:
			kinds[i] = Lib
		}
	}
	// A pthread stack is an anonymous read-write mapping right above its
	// guard page (an inaccessible mapping of its own).
	for i := 1; i < len(ms); i++ {
		prev, m := ms[i-1], ms[i]
		if kinds[i] == OtherAnon && m.Path == "" && strings.HasPrefix(m.Perms, "rw") &&
			prev.Path == "" && strings.HasPrefix(prev.Perms, "---") && prev.End == m.Start && prev.Size() <= 64<<10 {
			kinds[i] = Stack
		}
	}
	return kinds
}

func classifyOne(m Mapping, exe string) Kind {
	p := m.Path
	switch {
	case strings.Contains(p, GuestMemoryName):
		return Guest
	case exe != "" && p == exe:
		switch {
		case strings.Contains(m.Perms, "x"):
			return Text
		case strings.HasPrefix(m.Perms, "rw"):
			return Data
		default:
			return ROData
		}
	case p == "[stack]":
		return Stack
	case p == "[vdso]", p == "[vvar]", p == "[vvar_vclock]", p == "[vsyscall]",
		strings.HasPrefix(p, "anon_inode:kvm"), strings.HasPrefix(p, "anon_inode:bpf"), strings.HasPrefix(p, "anon_inode:"):
		return Kernel
	case strings.HasPrefix(p, "/") && (strings.HasSuffix(p, ".so") || strings.Contains(p, ".so.")):
		return Lib
	case strings.HasPrefix(p, "/"):
		return OtherFile
	case p == "[anon: Go: heap]":
		return GoHeap
	case p == "[anon: Go: OS thread stack]", p == "[anon: Go: goroutine stack (system)]":
		return Stack
	case p == "" && inGoHeapRange(m.Start) && !strings.HasPrefix(m.Perms, "---"):
		return GoHeap
	}
	return OtherAnon
}

// Breakdown is resident memory in bytes per kind.
type Breakdown [numKinds]uint64

// Sum adds up ms's Rss by the kinds Classify gives them.
func Sum(ms []Mapping, kinds []Kind) Breakdown {
	var b Breakdown
	for i, m := range ms {
		b[kinds[i]] += m.Rss
	}
	return b
}

// Get returns the bytes of kind k.
func (b Breakdown) Get(k Kind) uint64 {
	if k < 0 || k >= numKinds {
		return 0
	}
	return b[k]
}

// Binary is the binary's resident memory: text, rodata, data and bss.
func (b Breakdown) Binary() uint64 { return b[Text] + b[ROData] + b[Data] + b[BSS] }

// BeyondGuest is every kind but guest memory.
func (b Breakdown) BeyondGuest() uint64 {
	var t uint64
	for k, n := range b {
		if Kind(k) != Guest {
			t += n
		}
	}
	return t
}
