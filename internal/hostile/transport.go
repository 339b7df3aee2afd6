//go:build linux && amd64

package main

import (
	"encoding/binary"
	"sync/atomic"
	"time"
	"unsafe"
)

// colibri's virtio-pci BAR 0 layout (vmm/virtio/pci.go), which the
// capabilities also describe.
const (
	barSize    = 0x8000
	offCommon  = 0x0000
	offISR     = 0x1000
	offDevice  = 0x2000
	offNotify  = 0x3000
	notifyMult = 4
	ioBarSize  = 4 // BAR 1: the notification port
	offMSIX    = 0x4000
	offPBA     = 0x6000
)

// Common configuration registers (virtio 1.2, 4.1.4.3) and their widths.
const (
	ccDevFeatSel  = 0x00 // 4
	ccDevFeat     = 0x04 // 4
	ccDrvFeatSel  = 0x08 // 4
	ccDrvFeat     = 0x0c // 4
	ccConfigMSIX  = 0x10 // 2
	ccNumQueues   = 0x12 // 2
	ccStatus      = 0x14 // 1
	ccGeneration  = 0x15 // 1
	ccQueueSel    = 0x16 // 2
	ccQueueSize   = 0x18 // 2
	ccQueueMSIX   = 0x1a // 2
	ccQueueEnable = 0x1c // 2
	ccQueueNotify = 0x1e // 2
	ccQueueDesc   = 0x20 // 8
	ccQueueDriver = 0x28 // 8
	ccQueueDevice = 0x30 // 8
)

// Device status bits.
const (
	stAck        = 1
	stDriver     = 2
	stDriverOK   = 4
	stFeaturesOK = 8
	stNeedsReset = 0x40
	stFailed     = 0x80
)

// Transport feature bits.
const (
	featIndirect = 1 << 28
	featEventIdx = 1 << 29
	featVersion1 = 1 << 32
)

// Descriptor flags.
const (
	dNext     = 1
	dWrite    = 2
	dIndirect = 4
)

const noVector = 0xffff

// vdev is one virtio device under attack.
type vdev struct {
	*pciDev
	kind    string
	nq      int
	qmax    []uint16
	offered uint64
	rings   []*ring
	mac     [6]byte // net only
	st      *devStats
	// dead is set when the device stopped answering a reset: it is left
	// alone from then on.
	dead bool
}

func (d *vdev) cc(off uintptr, width int) uint64       { return d.r(offCommon+off, width) }
func (d *vdev) setCC(off uintptr, width int, v uint64) { d.w(offCommon+off, width, v) }
func (d *vdev) status() uint8                          { return uint8(d.cc(ccStatus, 1)) }
func (d *vdev) setStatus(v uint8)                      { d.setCC(ccStatus, 1, uint64(v)) }

// refuse writes a register write the transport must refuse and counts
// it: the test compares the count with colibri's refused_writes.
func (d *vdev) refuse(off uintptr, width int, v uint64) {
	d.setCC(off, width, v)
	d.st.expRefused++
}

// reset writes 0 to device_status and waits for it to read back 0.
func (d *vdev) reset() bool {
	d.setStatus(0)
	for end := time.Now().Add(3 * time.Second); ; {
		if d.status() == 0 {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// features reads the device's offer.
func (d *vdev) features() uint64 {
	var f uint64
	for sel := 0; sel < 2; sel++ {
		d.setCC(ccDevFeatSel, 4, uint64(sel))
		f |= d.cc(ccDevFeat, 4) << (32 * sel)
	}
	return f
}

// negotiate walks ACKNOWLEDGE, DRIVER and FEATURES_OK with feat and
// reports whether the device kept FEATURES_OK.
func (d *vdev) negotiate(feat uint64) bool {
	d.setStatus(stAck)
	d.setStatus(stAck | stDriver)
	for sel := 0; sel < 2; sel++ {
		d.setCC(ccDrvFeatSel, 4, uint64(sel))
		d.setCC(ccDrvFeat, 4, feat>>(32*sel)&0xffffffff)
	}
	d.setStatus(stAck | stDriver | stFeaturesOK)
	return d.status()&stFeaturesOK != 0
}

// setQueue programs queue q; it enables it when enable is set.
func (d *vdev) setQueue(q int, size uint16, desc, avail, used uint64, enable bool) {
	d.setCC(ccQueueSel, 2, uint64(q))
	d.setCC(ccQueueSize, 2, uint64(size))
	d.setCC(ccQueueDesc, 8, desc)
	d.setCC(ccQueueDriver, 8, avail)
	d.setCC(ccQueueDevice, 8, used)
	if enable {
		d.setCC(ccQueueEnable, 2, 1)
	}
}

// driverOK sets DRIVER_OK after a successful negotiate.
func (d *vdev) driverOK() { d.setStatus(stAck | stDriver | stFeaturesOK | stDriverOK) }

// kick notifies queue q (through colibri's ioeventfd: no exit to the
// VMM's userspace).
func (d *vdev) kick(q int) { d.w(offNotify+uintptr(q*notifyMult), 2, uint64(q)) }

// needsReset reports whether DEVICE_NEEDS_RESET is set.
func (d *vdev) needsReset() bool { return d.status()&stNeedsReset != 0 }

// waitNeedsReset polls device_status for DEVICE_NEEDS_RESET for up to
// timeout.
func (d *vdev) waitNeedsReset(timeout time.Duration) bool {
	for end := time.Now().Add(timeout); ; {
		if d.needsReset() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// ring is the attacker's side of one virtqueue: a page each for the
// descriptor table, the available and the used ring, pages for indirect
// tables and for buffers.
type ring struct {
	size              uint16
	desc, avail, used *page
	ind               []*page
	data              []*page
	idx               uint16 // the next available index
	// usedAt is where the device was told the used ring is, when not in
	// used (read back through readUsed).
	usedAt   uint64
	readUsed func() (idx uint16, id, n uint32, ok bool)
	eventIdx bool
}

func newRing(a *arena, nind, ndata int) *ring {
	r := &ring{desc: a.take(), avail: a.take(), used: a.take()}
	for i := 0; i < nind; i++ {
		r.ind = append(r.ind, a.take())
	}
	for i := 0; i < ndata; i++ {
		r.data = append(r.data, a.take())
	}
	return r
}

// clear zeroes the rings for a fresh activation of size entries.
func (r *ring) clear(size uint16) {
	r.desc.zero()
	r.avail.zero()
	r.used.zero()
	r.size, r.idx, r.usedAt, r.readUsed = size, 0, 0, nil
}

// putDesc writes descriptor i of table t.
func putDesc(t []byte, i int, addr uint64, n uint32, flags, next uint16) {
	d := t[16*i : 16*i+16]
	binary.LittleEndian.PutUint64(d[0:], addr)
	binary.LittleEndian.PutUint32(d[8:], n)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], next)
}

// push makes head available and publishes the new index.
func (r *ring) push(head uint16) {
	binary.LittleEndian.PutUint16(r.avail.b[4+2*int(r.idx%r.size):], head)
	r.idx++
	r.setAvailIdx(r.idx)
}

// setAvailIdx publishes avail.idx = v (after the stores before it: x86
// keeps stores in order, and the call is a compiler barrier).
func (r *ring) setAvailIdx(v uint16) { store16(r.avail.b, v) }

// usedIdx loads the used index the device published.
func (r *ring) usedIdx() uint16 {
	if r.readUsed != nil {
		idx, _, _, _ := r.readUsed()
		return idx
	}
	return load16(r.used.b)
}

// usedElem returns used element i.
func (r *ring) usedElem(i uint16) (id, n uint32) {
	e := r.used.b[4+8*int(i%r.size):]
	return binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])
}

// waitUsed waits until the used index reaches want.
func (r *ring) waitUsed(want uint16, timeout time.Duration) bool {
	for end := time.Now().Add(timeout); ; {
		if r.usedIdx()-want < 0x8000 {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// load16 loads the 16-bit field at offset 2 of a page-aligned ring
// header (the index) with one load of the header's aligned first word,
// which the compiler can neither cache nor split.
func load16(b []byte) uint16 {
	return uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[0]))) >> 16)
}

// store16 stores the ring header's index (offset 2 of b): x86 keeps
// stores in program order, so the device sees the entries before it.
func store16(b []byte, v uint16) { binary.LittleEndian.PutUint16(b[2:], v) }
