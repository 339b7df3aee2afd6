//go:build linux && amd64

package main

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// attacker holds the devices under attack and the bookkeeping.
type attacker struct {
	rnd    *rand.Rand
	devs   []*vdev // in a fixed order: net, blk, rng (those present)
	ram    []ramRange
	ramEnd uint64 // the end of the highest RAM range
	ip     [4]byte
	peer   [4]byte
	// peerMAC is the peer's MAC, from its first ARP reply (zero until
	// then).
	peerMAC [6]byte
	arena   *arena
	kinds   map[string]*kindStats
	misses  []string
	// setupFailures counts activations with a valid layout that did not
	// reach DRIVER_OK without NEEDS_RESET: the attacker's own driver is
	// wrong if this is not zero.
	setupFailures int
	attacks       int
	// devMem reads guest-physical memory outside RAM ("/dev/mem"; empty:
	// used-vga is skipped); protect maps a page read-only or writable
	// again in this process (protect in the guest).
	devMem  string
	protect func(p *page, ro bool) error
	// canary are pages filled with a pattern and never given to a device
	// (MSI-X messages are aimed at the first).
	canary []*page
	start  time.Time
}

// Timeouts: the sandbox runs everything 30-50x slower than metal.
const (
	breakTimeout = 2 * time.Second       // for NEEDS_RESET after a malformed ring
	usedTimeout  = 2 * time.Second       // for a valid request to complete
	rxTimeout    = 2 * time.Second       // for a frame from the peer
	settle       = 30 * time.Millisecond // after an attack that may or may not break
)

func (a *attacker) kind(name string) *kindStats {
	k := a.kinds[name]
	if k == nil {
		k = &kindStats{}
		a.kinds[name] = k
	}
	return k
}

// miss records a broken rule.
func (a *attacker) miss(kind string, d *vdev, format string, args ...any) {
	a.kind(kind).miss++
	msg := fmt.Sprintf("%s on %s: %s", kind, d.kind, fmt.Sprintf(format, args...))
	if len(a.misses) < 50 {
		a.misses = append(a.misses, msg)
	}
	fmt.Printf("hostile: MISS %s\n", msg)
}

// expectBreak waits for DEVICE_NEEDS_RESET after a malformed ring or
// layout; rx marks a receive-queue attack, which only a frame arriving
// can trip (no NEEDS_RESET then is inconclusive, not a miss).
func (a *attacker) expectBreak(kind string, d *vdev, rx bool) {
	if d.waitNeedsReset(breakTimeout) {
		a.kind(kind).broke++
		d.st.needsReset++
		return
	}
	if rx {
		a.kind(kind).inconclusive++
		return
	}
	a.miss(kind, d, "no DEVICE_NEEDS_RESET within %v (status %#x)", breakTimeout, d.status())
}

// noteBreak records NEEDS_RESET if it is set after an attack that may
// or may not break the device.
func (a *attacker) noteBreak(kind string, d *vdev) {
	time.Sleep(settle)
	if d.needsReset() {
		a.kind(kind).broke++
		d.st.needsReset++
	}
}

// layout is how one activation programs the queues.
type layout struct {
	feat uint64
	size []uint16 // per queue; 0 leaves the queue disabled
	// addr, if set, overrides a queue's ring addresses.
	addr func(q int, r *ring) (desc, avail, used uint64)
	// vector, if set, gives the config and queue MSI-X vectors.
	vector func(q int) uint16 // q = -1: config vector
}

// randomLayout enables every queue with a random power-of-two size
// (4..min(max, 256), so a table fits a page) and a random subset of the
// offered features with VERSION_1.
func (a *attacker) randomLayout(d *vdev) layout {
	l := layout{size: make([]uint16, d.nq)}
	for q := range l.size {
		max := min(d.qmax[q], 256)
		sizes := []uint16{}
		for s := uint16(4); s <= max; s *= 2 {
			sizes = append(sizes, s)
		}
		l.size[q] = sizes[a.rnd.IntN(len(sizes))]
	}
	// Keep VERSION_1, take each other offered bit with probability 1/2.
	l.feat = featVersion1 | d.offered&a.rnd.Uint64()
	return l
}

// up resets d and activates it with l; it reports whether DRIVER_OK
// stuck without NEEDS_RESET.
func (a *attacker) up(d *vdev, l layout) bool {
	if !a.program(d, l) {
		return false
	}
	d.driverOK()
	st := d.status()
	return st&stDriverOK != 0 && st&stNeedsReset == 0
}

// upValid activates d with a random valid layout, counting a failure.
func (a *attacker) upValid(d *vdev) (layout, bool) {
	l := a.randomLayout(d)
	if !a.up(d, l) {
		a.setupFailures++
		fmt.Printf("hostile: setup of %s failed (status %#x)\n", d.kind, d.status())
		return l, false
	}
	return l, true
}

// pickRAM returns an address in RAM where n bytes fit (for buffers the
// device only reads: any guest memory will do).
func (a *attacker) pickRAM(n uint64) uint64 {
	for _, r := range a.ram {
		if r.start >= 1<<20 && r.end-r.start >= n+2<<20 {
			span := r.end - r.start - n - 1<<20
			return (r.start + 1<<20 + a.rnd.Uint64N(span)) &^ 0xfff
		}
	}
	return a.ram[len(a.ram)-1].start
}

// outside returns an address where no guest RAM is (and a length that
// makes [addr, addr+n) leave RAM).
func (a *attacker) outside(d *vdev) (uint64, uint32) {
	switch a.rnd.IntN(8) {
	case 0:
		return a.ramEnd, 16
	case 1:
		return a.ramEnd - 8, 16 // straddles the end of RAM
	case 2:
		return 0xc0000000, 64 // the PCI hole, where the BARs live
	case 3:
		return d.barPA, 64 // the device's own registers
	case 4:
		return 0xfee00000, 16 // the local APIC
	case 5:
		return 1 << 52, 16
	case 6:
		return 0xfffffffffffff000, 0x2000 // wraps around 2^64
	default:
		return a.ramEnd + a.rnd.Uint64N(1<<40), 4096
	}
}
