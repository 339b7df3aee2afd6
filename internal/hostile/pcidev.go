//go:build linux && amd64

package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const sysPCI = "/sys/bus/pci/devices"

// virtio-pci modern device ids (0x1040 + virtio type) and what they are.
var virtioKinds = map[uint16]string{0x1041: "net", 0x1042: "blk", 0x1044: "rng"}

// pciDev is one PCI function taken away from its driver: its
// configuration space through sysfs and its BAR 0 mapped.
type pciDev struct {
	addr  string // 0000:00:02.0
	dir   string
	cfg   *os.File
	barPA uint64 // BAR 0's guest-physical address, as Linux assigned it
	bar   []byte
	base  uintptr
	port  *os.File // BAR 1, the notification port (sysfs turns a write into an out)
	msix  int      // offset of the MSI-X capability in configuration space (0: none)
	// io, when set, replaces MMIO and sysfs (a test drives colibri's
	// transport in-process through it).
	io regs
}

// regs reaches a function's BAR 0, its I/O BAR 1 and configuration space.
type regs interface {
	barRead(off uintptr, width int) uint64
	barWrite(off uintptr, width int, v uint64)
	portWrite(off int64, width int, v uint64)
	cfgRead(off int64, b []byte) error
	cfgWrite(off int64, b []byte) error
}

// findVirtio lists the virtio-pci functions colibri gave the guest, by
// kind, in bus order.
func findVirtio() (map[string]*pciDev, error) {
	ents, err := os.ReadDir(sysPCI)
	if err != nil {
		return nil, fmt.Errorf("listing PCI devices: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	out := map[string]*pciDev{}
	for _, n := range names {
		dir := filepath.Join(sysPCI, n)
		if readHex(filepath.Join(dir, "vendor")) != 0x1af4 {
			continue
		}
		kind, ok := virtioKinds[uint16(readHex(filepath.Join(dir, "device")))]
		if !ok || out[kind] != nil {
			continue
		}
		out[kind] = &pciDev{addr: n, dir: dir}
	}
	return out, nil
}

func readHex(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"), 16, 64)
	return v
}

func writeFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// take unbinds the function's driver, enables it and maps BAR 0.
func (p *pciDev) take() error {
	if _, err := os.Lstat(filepath.Join(p.dir, "driver")); err == nil {
		if err := writeFile(filepath.Join(p.dir, "driver", "unbind"), p.addr); err != nil {
			return fmt.Errorf("%s: unbind its driver: %w", p.addr, err)
		}
	}
	if err := writeFile(filepath.Join(p.dir, "enable"), "1"); err != nil {
		return fmt.Errorf("%s: enable: %w", p.addr, err)
	}
	var err error
	if p.cfg, err = os.OpenFile(filepath.Join(p.dir, "config"), os.O_RDWR, 0); err != nil {
		return fmt.Errorf("%s: config space: %w", p.addr, err)
	}
	res, err := os.ReadFile(filepath.Join(p.dir, "resource"))
	if err != nil {
		return fmt.Errorf("%s: resources: %w", p.addr, err)
	}
	first := strings.Fields(strings.SplitN(string(res), "\n", 2)[0])
	if len(first) < 2 {
		return fmt.Errorf("%s: resource file %q", p.addr, res)
	}
	p.barPA, _ = strconv.ParseUint(strings.TrimPrefix(first[0], "0x"), 16, 64)
	f, err := os.OpenFile(filepath.Join(p.dir, "resource0"), os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return fmt.Errorf("%s: BAR 0: %w", p.addr, err)
	}
	defer f.Close()
	if p.bar, err = unix.Mmap(int(f.Fd()), 0, barSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return fmt.Errorf("%s: mmap BAR 0: %w", p.addr, err)
	}
	p.base = uintptr(unsafe.Pointer(&p.bar[0]))
	if p.port, err = os.OpenFile(filepath.Join(p.dir, "resource1"), os.O_RDWR, 0); err != nil {
		return fmt.Errorf("%s: the notification port (BAR 1): %w", p.addr, err)
	}
	return nil
}

// portWrite writes the low width (1, 2, 4) bytes of v at off in the I/O
// BAR: one out instruction of that width. A write sysfs refuses (beyond
// the BAR) is dropped, as the guest's own would be.
func (p *pciDev) portWrite(off int64, width int, v uint64) {
	if p.io != nil {
		p.io.portWrite(off, width, v)
		return
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	_, _ = p.port.WriteAt(b[:width], off)
}

// give unmaps the BAR, disables the function and binds virtio-pci to it
// again.
func (p *pciDev) give() error {
	if p.bar != nil {
		unix.Munmap(p.bar)
		p.bar, p.base = nil, 0
	}
	if p.port != nil {
		p.port.Close()
		p.port = nil
	}
	if p.cfg != nil {
		p.cfg.Close()
		p.cfg = nil
	}
	_ = writeFile(filepath.Join(p.dir, "enable"), "0")
	if err := writeFile("/sys/bus/pci/drivers/virtio-pci/bind", p.addr); err != nil {
		return fmt.Errorf("%s: bind virtio-pci: %w", p.addr, err)
	}
	return nil
}

// cfgRead reads n (1, 2, 4) bytes of configuration space at off.
func (p *pciDev) cfgRead(off int64, n int) uint32 {
	b := make([]byte, 4)
	if err := p.readCfg(off, b[:n]); err != nil {
		return 0xffffffff
	}
	return binary.LittleEndian.Uint32(b)
}

// readCfg reads len(b) bytes of configuration space at off.
func (p *pciDev) readCfg(off int64, b []byte) error {
	if p.io != nil {
		return p.io.cfgRead(off, b)
	}
	_, err := p.cfg.ReadAt(b, off)
	return err
}

// cfgWrite writes n (1, 2, 4) bytes of configuration space at off (sysfs
// turns an aligned write into one access of that width).
func (p *pciDev) cfgWrite(off int64, n int, v uint32) error {
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, v)
	if p.io != nil {
		return p.io.cfgWrite(off, b[:n])
	}
	_, err := p.cfg.WriteAt(b[:n], off)
	return err
}

// findCap returns the offset of capability id, 0 if absent.
func (p *pciDev) findCap(id uint32) int {
	off := p.cfgRead(0x34, 1) &^ 3
	for i := 0; off != 0 && i < 48; i++ {
		if p.cfgRead(int64(off), 1) == id {
			return int(off)
		}
		off = p.cfgRead(int64(off)+1, 1) &^ 3
	}
	return 0
}

func (p *pciDev) r(off uintptr, width int) uint64 {
	if p.io != nil {
		return p.io.barRead(off, width)
	}
	return mmioRead(p.base+off, width)
}

func (p *pciDev) w(off uintptr, width int, v uint64) {
	if p.io != nil {
		p.io.barWrite(off, width, v)
		return
	}
	mmioWrite(p.base+off, width, v)
}

// ramRange is one range of guest RAM as /proc/iomem reports it.
type ramRange struct{ start, end uint64 } // [start, end)

// systemRAM reads the guest's RAM ranges from /proc/iomem (root sees
// the addresses).
func systemRAM() ([]ramRange, error) {
	f, err := os.Open("/proc/iomem")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []ramRange
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, " ") || !strings.HasSuffix(line, ": System RAM") {
			continue
		}
		lo, hi, ok := strings.Cut(strings.Fields(line)[0], "-")
		if !ok {
			continue
		}
		a, _ := strconv.ParseUint(lo, 16, 64)
		b, _ := strconv.ParseUint(hi, 16, 64)
		if b > a {
			out = append(out, ramRange{a, b + 1})
		}
	}
	if len(out) == 0 || out[len(out)-1].end <= 1<<20 {
		return nil, errors.New("/proc/iomem shows no System RAM addresses (not root?)")
	}
	return out, sc.Err()
}

// waitFor polls cond every 50 ms until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
