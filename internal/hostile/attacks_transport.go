//go:build linux && amd64

package main

import (
	"encoding/binary"
	"os"
	"time"
)

// Attacks on the virtio-pci transport: its state machine, registers,
// MSI-X table, BAR and ring layout.

// checkStatus is a miss unless device_status reads want.
func (a *attacker) checkStatus(kind string, d *vdev, want uint8, what string) {
	if got := d.status(); got != want {
		a.miss(kind, d, "%s: status %#x, want %#x", what, got, want)
	}
}

func (a *attacker) statusOrder(d *vdev, kind string) {
	const ad = stAck | stDriver
	cases := []func(){
		func() { d.refuse(ccStatus, 1, stDriver); a.checkStatus(kind, d, 0, "DRIVER without ACKNOWLEDGE") },
		func() {
			d.setStatus(stAck)
			d.refuse(ccStatus, 1, stAck|stFeaturesOK)
			a.checkStatus(kind, d, stAck, "FEATURES_OK without DRIVER")
		},
		func() {
			d.setStatus(stAck)
			d.setStatus(ad)
			d.refuse(ccStatus, 1, ad|stDriverOK)
			a.checkStatus(kind, d, ad, "DRIVER_OK without FEATURES_OK")
		},
		func() {
			d.setStatus(stAck)
			d.refuse(ccStatus, 1, uint64(stAck|0x10<<a.rnd.IntN(2)))
			a.checkStatus(kind, d, stAck, "a reserved status bit")
		},
		func() {
			d.setStatus(stAck)
			d.setStatus(ad)
			d.refuse(ccStatus, 1, stAck)
			a.checkStatus(kind, d, ad, "clearing DRIVER without a reset")
		},
		func() {
			d.setStatus(stAck)
			d.setStatus(stAck | stFailed)
			d.refuse(ccStatus, 1, stAck|stFailed|stDriver)
			a.checkStatus(kind, d, stAck|stFailed, "DRIVER after FAILED")
		},
		func() {
			bad := uint64(1) << 63
			if d.offered&bad != 0 || a.rnd.IntN(2) == 0 {
				bad = 0 // without VERSION_1 instead
			}
			if d.negotiate(d.offered&^featVersion1 | bad) {
				a.miss(kind, d, "features %#x accepted", d.offered&^featVersion1|bad)
				return
			}
			d.refuse(ccStatus, 1, ad|stFeaturesOK|stDriverOK)
			a.checkStatus(kind, d, ad, "DRIVER_OK after refused features")
		},
		func() {
			if _, ok := a.upValid(d); !ok {
				return
			}
			d.refuse(ccStatus, 1, ad|stFeaturesOK)
			a.checkStatus(kind, d, ad|stFeaturesOK|stDriverOK, "clearing DRIVER_OK without a reset")
		},
		func() {
			if !d.negotiate(featVersion1) {
				a.setupFailures++
				return
			}
			d.setStatus(ad | stFeaturesOK | stFailed)
			d.refuse(ccStatus, 1, ad|stFeaturesOK|stFailed|stDriverOK)
			a.checkStatus(kind, d, ad|stFeaturesOK|stFailed, "DRIVER_OK after FAILED")
		},
		func() { d.refuse(ccStatus, 1, 0xff&^stNeedsReset); a.checkStatus(kind, d, 0, "every bit at once") },
	}
	for i := 0; i < 3; i++ {
		if !d.reset() {
			d.dead = true
			return
		}
		cases[a.rnd.IntN(len(cases))]()
	}
}

func (a *attacker) queueSize(d *vdev, kind string) {
	l := a.randomLayout(d)
	if !d.reset() || !d.negotiate(l.feat) {
		a.setupFailures++
		return
	}
	q := a.rnd.IntN(d.nq)
	d.setCC(ccQueueSel, 2, uint64(q))
	max := d.qmax[q]
	for _, s := range []uint64{0, 3, 6, uint64(max) * 2, uint64(max) + 1, 0xffff, 0x8000} {
		if s == uint64(max) || s <= uint64(max) && s&(s-1) == 0 && s != 0 {
			continue
		}
		d.refuse(ccQueueSize, 2, s)
	}
	if got := d.cc(ccQueueSize, 2); got != uint64(max) {
		a.miss(kind, d, "queue %d size %d after refused sizes, want %d", q, got, max)
	}
	r := d.rings[q]
	r.clear(min(max, 256))
	d.setQueue(q, min(max, 256), r.desc.pa, r.avail.pa, r.used.pa, true)
	d.refuse(ccQueueSize, 2, 4)
	if got := d.cc(ccQueueSize, 2); got != uint64(min(max, 256)) {
		a.miss(kind, d, "enabled queue %d: size %d, want %d", q, got, min(max, 256))
	}
}

func (a *attacker) queueLate(d *vdev, kind string) {
	l := a.randomLayout(d)
	if !a.program(d, l) {
		a.setupFailures++
		return
	}
	q := a.rnd.IntN(d.nq)
	d.setCC(ccQueueSel, 2, uint64(q))
	d.refuse(ccQueueEnable, 2, 0)
	d.refuse(ccQueueDesc, 8, a.ramEnd)
	d.refuse(ccQueueSize, 2, 4)
	d.driverOK()
	if d.status()&stDriverOK == 0 || d.needsReset() {
		a.setupFailures++
		return
	}
	d.setCC(ccQueueSel, 2, uint64(a.rnd.IntN(d.nq)))
	q2 := int(d.cc(ccQueueSel, 2))
	d.refuse(ccQueueEnable, 2, 1)
	d.refuse(ccQueueDesc, 8, a.ramEnd)
	d.refuse(ccQueueDriver, 8, 0)
	d.refuse(ccQueueDevice, 8, 1<<40)
	d.refuse(ccQueueSize, 2, 4)
	d.refuse(ccQueueMSIX, 2, 0)
	d.refuse(ccDrvFeat, 4, 0xffffffff)
	if got := d.cc(ccQueueDesc, 8); got != d.rings[q2].desc.pa {
		a.miss(kind, d, "queue %d descriptor address %#x after DRIVER_OK, want %#x", q2, got, d.rings[q2].desc.pa)
	}
	a.valid(kind, d)
}

func (a *attacker) queueSelectOOB(d *vdev, kind string) {
	if !d.reset() || !d.negotiate(featVersion1) {
		a.setupFailures++
		return
	}
	sel := uint64(d.nq + a.rnd.IntN(0x10000-d.nq))
	d.setCC(ccQueueSel, 2, sel)
	d.refuse(ccQueueSize, 2, 4)
	d.refuse(ccQueueMSIX, 2, 0)
	d.refuse(ccQueueEnable, 2, 1)
	d.refuse(ccQueueDesc, 8, 0x10000)
	d.refuse(ccQueueDriver, 8, 0x10000)
	d.refuse(ccQueueDevice, 8, 0x10000)
	if s, e, v, dd := d.cc(ccQueueSize, 2), d.cc(ccQueueEnable, 2), d.cc(ccQueueMSIX, 2), d.cc(ccQueueDesc, 8); s != 0 || e != 0 || v != noVector || dd != 0 {
		a.miss(kind, d, "queue_select %d: size %d, enable %d, vector %#x, desc %#x; want nothing there", sel, s, e, v, dd)
	}
	if n := d.cc(ccNumQueues, 2); n != uint64(d.nq) {
		a.miss(kind, d, "num_queues reads %d, want %d", n, d.nq)
	}
}

func (a *attacker) readonlyRegs(d *vdev, kind string) {
	live := a.rnd.IntN(2) == 0
	if live {
		if _, ok := a.upValid(d); !ok {
			return
		}
	} else if !d.reset() {
		d.dead = true
		return
	}
	q := a.rnd.IntN(d.nq)
	d.setCC(ccQueueSel, 2, uint64(q))
	gen := d.cc(ccGeneration, 1)
	d.setCC(ccDevFeatSel, 4, 0)
	feat := d.cc(ccDevFeat, 4)
	d.refuse(ccDevFeat, 4, ^feat&0xffffffff)
	d.refuse(ccNumQueues, 2, 0x100)
	d.refuse(ccGeneration, 1, gen+1)
	d.refuse(ccQueueNotify, 2, uint64(q+1))
	if f, n, g, o := d.cc(ccDevFeat, 4), d.cc(ccNumQueues, 2), d.cc(ccGeneration, 1), d.cc(ccQueueNotify, 2); f != feat || n != uint64(d.nq) || g != gen || o != uint64(q) {
		a.miss(kind, d, "read-only registers changed: features %#x, num_queues %d, generation %d, notify_off %d", f, n, g, o)
	}
	if live {
		a.valid(kind, d)
	}
}

func (a *attacker) vectorsOOB(d *vdev, kind string) {
	if !d.reset() || !d.negotiate(featVersion1) {
		a.setupFailures++
		return
	}
	nvec := d.vectors()
	check := func(off uintptr, v uint64) {
		d.setCC(off, 2, v)
		want := v
		if v >= uint64(nvec) {
			want = noVector
		}
		if got := d.cc(off, 2); got != want {
			a.miss(kind, d, "vector register %#x: wrote %#x, reads %#x, want %#x", off, v, got, want)
		}
	}
	check(ccConfigMSIX, uint64(nvec+a.rnd.IntN(0xfffe-nvec)))
	check(ccConfigMSIX, uint64(a.rnd.IntN(nvec)))
	d.setCC(ccQueueSel, 2, uint64(a.rnd.IntN(d.nq)))
	check(ccQueueMSIX, uint64(nvec+a.rnd.IntN(0xfffe-nvec)))
	check(ccQueueMSIX, uint64(a.rnd.IntN(nvec)))
}

// vectors returns the MSI-X table size.
func (d *vdev) vectors() int { return int(d.cfgRead(int64(d.msix)+2, 2)&0x7ff) + 1 }

// randomAccess writes (or reads) a random aligned width at off.
func (a *attacker) randomAccess(d *vdev, off uintptr) {
	width := 1 << a.rnd.IntN(4)
	off &^= uintptr(width - 1)
	if a.rnd.IntN(4) == 0 {
		d.r(off, width)
		return
	}
	d.w(off, width, a.rnd.Uint64())
}

func (a *attacker) barJunk(d *vdev, kind string) {
	if _, ok := a.upValid(d); !ok {
		return
	}
	mac := d.r(offDevice, 8) & 0xffffffffffff
	tableEnd := uintptr(offMSIX + 16*d.vectors())
	for i := 0; i < 32; i++ {
		off := uintptr(0x38 + a.rnd.IntN(barSize-0x38))
		if off >= offMSIX && off < tableEnd {
			continue // the MSI-X table is msix-anywhere's
		}
		a.randomAccess(d, off)
	}
	if d.kind == "net" && d.r(offDevice, 8)&0xffffffffffff != mac {
		a.miss(kind, d, "a device-config write changed the MAC")
	}
	if st := d.status(); st&stDriverOK == 0 || st&stNeedsReset != 0 {
		a.miss(kind, d, "writes outside the registers changed the status to %#x", st)
		return
	}
	a.valid(kind, d)
}

func (a *attacker) cfgJunk(d *vdev, kind string) {
	before := make([]byte, 256)
	if err := d.readCfg(0, before); err != nil {
		return
	}
	ctl := int64(d.msix + 2)
	for i := 0; i < 16; i++ {
		off := int64(0x40 + a.rnd.IntN(0xc0))
		n := 1 << a.rnd.IntN(3)
		off &^= int64(n - 1)
		if off+int64(n) > ctl && off < ctl+2 {
			continue
		}
		_ = d.cfgWrite(off, n, a.rnd.Uint32())
	}
	after := make([]byte, 256)
	if err := d.readCfg(0, after); err != nil {
		return
	}
	for i := 0x40; i < 256; i++ {
		if after[i] != before[i] && (int64(i) < ctl || int64(i) >= ctl+2) {
			a.miss(kind, d, "configuration byte %#x changed from %#x to %#x (capabilities are read-only)", i, before[i], after[i])
			break
		}
	}
	a.recheck(kind, d)
}

// msiEntry returns an MSI address and data "pointing anywhere": random
// bits everywhere, except that a message that could reach this guest's
// only vCPU (APIC id 0, or broadcast, or logical destination) gets a
// fixed-mode, edge vector 0xe0-0xeb that the guest's kernel acknowledges
// as spurious (a vector it uses could disturb it; delivery modes such as
// INIT or SMI would kill it).
func (a *attacker) msiEntry(canary uint64) (uint64, uint32) {
	var addr uint64
	switch a.rnd.IntN(4) {
	case 0:
		addr = canary // as if the message were a memory write, onto the canary
	case 1:
		addr = a.rnd.Uint64()
	default:
		addr = 0xfee00000 | a.rnd.Uint64()&0xff00c // destination id, mode and redirection hint
		if a.rnd.IntN(2) == 0 {
			addr |= uint64(a.rnd.Uint32()) << 32
		}
	}
	data := a.rnd.Uint32()
	if !msiHarmless(addr, data) {
		data = 0xe0 + uint32(a.rnd.IntN(12))
	}
	return addr, data
}

// msiHarmless reports whether KVM would deliver the MSI message to no
// vCPU of this one-vCPU guest (physical destination mode and an APIC id
// other than 0 and broadcast), or deliver it as a fixed, edge interrupt
// on a vector from 0xe0 to 0xeb, which the guest's kernel acknowledges
// as spurious.
func msiHarmless(addr uint64, data uint32) bool {
	if dest := addr >> 12 & 0xff; dest != 0 && dest != 0xff && addr&4 == 0 {
		return true
	}
	v := data & 0xff
	return data&0xff00 == 0 && v >= 0xe0 && v <= 0xeb // fixed mode, edge, deassert
}

func (a *attacker) msixAnywhere(d *vdev, kind string) {
	nvec := d.vectors()
	ctl := int64(d.msix + 2)
	for v := 0; v < nvec; v++ {
		addr, data := a.msiEntry(a.canaryPA())
		e := uintptr(offMSIX + 16*v)
		d.w(e, 4, addr&0xffffffff)
		d.w(e+4, 4, addr>>32)
		d.w(e+8, 4, uint64(data))
		d.w(e+12, 4, uint64(a.rnd.IntN(2)&a.rnd.IntN(2))) // mostly unmasked
	}
	// Past the table, in the PBA, partial entries.
	for i := 0; i < 8; i++ {
		a.randomAccess(d, uintptr(offMSIX+16*nvec+a.rnd.IntN(0x4000-16*nvec)))
	}
	// A partial write into an entry; then the entry is made harmless to
	// this guest again (a random byte can aim an INIT at its vCPU, which
	// restarts it at the reset vector: seen, the guest's own doing).
	e := uintptr(offMSIX + 16*a.rnd.IntN(nvec))
	d.w(e+uintptr(a.rnd.IntN(16)), 1, uint64(a.rnd.Uint32()))
	if addr := d.r(e, 4) | d.r(e+4, 4)<<32; !msiHarmless(addr, uint32(d.r(e+8, 4))) {
		d.w(e+8, 4, 0xe0)
	}
	_ = d.cfgWrite(ctl, 2, 0x8000|uint32(a.rnd.IntN(2))<<14)
	l := a.randomLayout(d)
	l.vector = func(int) uint16 { return uint16(a.rnd.IntN(nvec + 2)) }
	if a.up(d, l) {
		a.valid(kind, d) // a queue interrupt
		for i := 0; i < 4; i++ {
			_ = d.cfgWrite(ctl, 2, 0x8000|uint32(a.rnd.IntN(2))<<14)
			d.w(uintptr(offMSIX+16*a.rnd.IntN(nvec)+12), 4, 0)
		}
		// A malformed chain: the configuration interrupt.
		ra := ringAttacks[a.rnd.IntN(len(ringAttacks))]
		q := 0
		if d.kind == "net" {
			q = 1
		}
		ra.build(a, d, d.rings[q], d.rings[q].data[len(d.rings[q].data)-1])
		d.kick(q)
		a.expectBreak(kind, d, false)
	} else {
		a.setupFailures++
	}
	for v := 0; v < nvec; v++ {
		d.w(uintptr(offMSIX+16*v+12), 4, 1)
	}
	_ = d.cfgWrite(ctl, 2, 0)
}

// canaryPA is the canary's first page's guest-physical address.
func (a *attacker) canaryPA() uint64 { return a.canary[0].pa }

// barMove moves the device's BAR while its queues are live: onto a
// neighbour device's registers (its kicks cannot be registered over the
// neighbour's: it must give up, NEEDS_RESET, and the neighbour must not
// notice), onto RAM, to 0, to the top of the 32-bit space, onto the
// boot timer, to the sizing pattern, or turns memory decoding off; then
// moves it back and checks that a reset makes it work again.
func (a *attacker) barMove(d *vdev, kind string) {
	var neighbour *vdev
	if a.rnd.IntN(2) == 0 {
		for _, o := range a.devs {
			if o != d && !o.dead && (neighbour == nil || a.rnd.IntN(2) == 0) {
				neighbour = o
			}
		}
	}
	if neighbour != nil {
		if _, ok := a.upValid(neighbour); !ok {
			return
		}
	}
	if _, ok := a.upValid(d); !ok {
		return
	}
	orig := d.cfgRead(0x10, 4)
	cmd := d.cfgRead(0x04, 2)
	switch {
	case neighbour != nil:
		_ = d.cfgWrite(0x10, 4, uint32(neighbour.barPA))
	case a.rnd.IntN(5) == 0:
		_ = d.cfgWrite(0x04, 2, cmd&^2) // memory decoding off
	default:
		targets := []uint32{16 << 20, 0, 0xffff8000, 0xffffffff, 0xd0000000}
		_ = d.cfgWrite(0x10, 4, targets[a.rnd.IntN(len(targets))])
	}
	time.Sleep(5 * time.Millisecond)
	_ = d.cfgWrite(0x10, 4, orig)
	_ = d.cfgWrite(0x04, 2, cmd)
	if got := d.cfgRead(0x10, 4); got != orig {
		a.miss(kind, d, "BAR 0 reads %#x after restoring %#x", got, orig)
		d.dead = true
		return
	}
	if neighbour != nil {
		if neighbour.needsReset() {
			a.miss(kind, neighbour, "a neighbour's BAR moved onto this device's broke it")
		} else {
			a.valid(kind, neighbour)
		}
		a.expectBreak(kind, d, false)
	} else {
		a.noteBreak(kind, d)
	}
	a.recheck(kind, d)
}

func (a *attacker) kickStorm(d *vdev, kind string) {
	if _, ok := a.upValid(d); !ok {
		return
	}
	for i := 0; i < 48; i++ {
		var off uintptr
		switch a.rnd.IntN(3) {
		case 0:
			off = offNotify + uintptr(notifyMult*a.rnd.IntN(d.nq+8))
		case 1:
			off = offNotify + uintptr(a.rnd.IntN(0x1000))
		default:
			// The notification port: a queue's index or not, any
			// width, at any of its ports.
			width := 1 << a.rnd.IntN(3)
			v := a.rnd.Uint64()
			if a.rnd.IntN(2) == 0 {
				v = uint64(a.rnd.IntN(d.nq + 8))
			}
			d.portWrite(int64(a.rnd.IntN(ioBarSize/width)*width), width, v)
			continue
		}
		width := 1 << a.rnd.IntN(4)
		d.w(off&^uintptr(width-1), width, a.rnd.Uint64())
	}
	a.noteBreak(kind, d)
	if d.needsReset() {
		a.miss(kind, d, "kicks on valid rings broke the device")
		return
	}
	a.valid(kind, d)
}

func (a *attacker) resetRace(d *vdev, kind string) {
	for i := 0; i < 3; i++ {
		if _, ok := a.upValid(d); !ok {
			return
		}
		switch d.kind {
		case "rng":
			r := d.rings[0]
			for j := 0; j < 4; j++ {
				h := r.slot(1)
				p := r.data[j%len(r.data)]
				putDesc(r.desc.b, int(h), p.pa, pageSize, dWrite, 0)
				r.push(h)
			}
			d.kick(0)
		case "blk":
			r := d.rings[0]
			a.postBlk(d, blkReq{typ: 0, sector: 0, data: r.data[1], n: pageSize, status: r.data[3]})
			d.kick(0)
		case "net":
			a.postRx(d, 2)
			a.sendARP(d, d.mac)
		}
		if !d.reset() {
			a.miss(kind, d, "a reset with requests in flight did not complete (status %#x)", d.status())
			d.dead = true
			return
		}
	}
	a.recheck(kind, d)
}

func (a *attacker) churn(d *vdev, kind string) {
	for i := 0; i < 8; i++ {
		if _, ok := a.upValid(d); !ok {
			return
		}
		if a.rnd.IntN(2) == 0 {
			d.kick(a.rnd.IntN(d.nq))
		}
	}
	a.valid(kind, d)
}

// badRing returns a layout whose queue q has one ring where it cannot
// be: outside RAM, straddling its end, on the BARs, or misaligned.
func (a *attacker) badRingLayout(d *vdev, misaligned bool) layout {
	l := a.randomLayout(d)
	bad := a.rnd.IntN(d.nq)
	which := a.rnd.IntN(3)
	l.addr = func(q int, r *ring) (uint64, uint64, uint64) {
		addrs := [3]uint64{r.desc.pa, r.avail.pa, r.used.pa}
		if q == bad {
			if misaligned {
				addrs[which] += []uint64{1 + a.rnd.Uint64N(15), 1, 1 + a.rnd.Uint64N(3)}[which]
			} else {
				addr, _ := a.outside(d)
				if addr == a.ramEnd-8 { // straddle the end of RAM, aligned
					addr = a.ramEnd - 16
				}
				addrs[which] = addr
			}
		}
		return addrs[0], addrs[1], addrs[2]
	}
	return l
}

func (a *attacker) ringsOutside(d *vdev, kind string) {
	if a.up(d, a.badRingLayout(d, false)) {
		a.miss(kind, d, "activation with a ring outside RAM was accepted")
		return
	}
	a.expectBreak(kind, d, false)
}

func (a *attacker) ringsMisaligned(d *vdev, kind string) {
	if a.up(d, a.badRingLayout(d, true)) {
		a.miss(kind, d, "activation with a misaligned ring was accepted")
		return
	}
	a.expectBreak(kind, d, false)
}

// ringsOverlap puts a queue's available and used rings on one page (the
// device's used entries then land in the driver's ring), or, for the
// transmit queue whose buffers the device only reads, the used ring on
// the descriptor table. Anything may come of it but a device writing
// outside the attacker's pages; then the device must work after a reset.
func (a *attacker) ringsOverlap(d *vdev, kind string) {
	l := a.randomLayout(d)
	q := 0
	if d.kind == "net" {
		q = 1
	}
	descUsed := d.kind == "net" && a.rnd.IntN(2) == 0
	l.addr = func(i int, r *ring) (uint64, uint64, uint64) {
		if i != q {
			return r.desc.pa, r.avail.pa, r.used.pa
		}
		if descUsed {
			return r.desc.pa, r.avail.pa, r.desc.pa
		}
		return r.desc.pa, r.avail.pa, r.avail.pa
	}
	if !a.up(d, l) {
		a.setupFailures++
		return
	}
	r := d.rings[q]
	for i := 0; i < 3; i++ {
		switch d.kind {
		case "rng":
			h := r.slot(1)
			putDesc(r.desc.b, int(h), r.data[0].pa, 256, dWrite, 0)
			r.push(h)
		case "blk":
			a.postBlk(d, blkReq{typ: 8, data: r.data[1], n: 20, status: r.data[3]})
		case "net":
			a.sendARP(d, d.mac)
		}
		d.kick(q)
		time.Sleep(5 * time.Millisecond)
	}
	a.noteBreak(kind, d)
	a.recheck(kind, d)
}

// usedReadonly maps the used rings read-only in the attacker's own page
// tables: the device writes them anyway (it is not bound by the guest's
// mappings) and must work.
func (a *attacker) usedReadonly(d *vdev, kind string) {
	if _, ok := a.upValid(d); !ok {
		return
	}
	for _, r := range d.rings {
		_ = a.protect(r.used, true)
	}
	a.valid(kind, d)
	for _, r := range d.rings {
		_ = a.protect(r.used, false)
	}
}

// usedVGA puts the used ring in the legacy VGA window (0xa0000-0xbffff),
// which the guest's firmware map reserves (no RAM as far as the guest
// knows, but guest memory to the VMM), and reads it back through
// /dev/mem.
func (a *attacker) usedVGA(d *vdev, kind string) {
	if a.devMem == "" {
		a.kind(kind).inconclusive++
		return
	}
	mem, err := os.Open(a.devMem)
	if err != nil {
		a.kind(kind).inconclusive++
		return
	}
	defer mem.Close()
	at := uint64(0xa0000 + 0x1000*a.rnd.IntN(32))
	l := a.randomLayout(d)
	l.addr = func(q int, r *ring) (uint64, uint64, uint64) { return r.desc.pa, r.avail.pa, at }
	if !a.up(d, l) {
		a.setupFailures++
		return
	}
	r := d.rings[0]
	r.readUsed = func() (uint16, uint32, uint32, bool) {
		var b [4]byte
		if _, err := mem.ReadAt(b[:], int64(at)); err != nil {
			return 0, 0, 0, false
		}
		return binary.LittleEndian.Uint16(b[2:]), 0, 0, true
	}
	elem := func(i uint16) (uint32, uint32) {
		var b [8]byte
		mem.ReadAt(b[:], int64(at)+4+8*int64(i%r.size))
		return binary.LittleEndian.Uint32(b[:]), binary.LittleEndian.Uint32(b[4:])
	}
	want := r.idx + 1
	switch d.kind {
	case "rng":
		h := r.slot(1)
		putDesc(r.desc.b, int(h), r.data[0].pa, 128, dWrite, 0)
		r.push(h)
	case "blk":
		a.postBlk(d, blkReq{typ: 8, data: r.data[1], n: 20, status: r.data[3]})
	}
	d.kick(0)
	d.st.validN++
	if !r.waitUsed(want, usedTimeout) {
		a.miss(kind, d, "used ring at %#x: used index %d, want %d", at, r.usedIdx(), want)
		return
	}
	if id, _ := elem(want - 1); id >= uint32(r.size) {
		a.miss(kind, d, "used ring at %#x: element id %d", at, id)
		return
	}
	d.st.validOK++
}
