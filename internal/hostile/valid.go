//go:build linux && amd64

package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"
)

// Each valid request fills its page with guard bytes first and checks
// afterwards that the device wrote nothing outside the buffer it was
// given.
const guard = 0xa5

// overrun reports whether p holds anything but guard bytes outside
// [off, off+n).
func overrun(p *page, off, n int) bool {
	for i, b := range p.b {
		if (i < off || i >= off+n) && b != guard {
			return true
		}
	}
	return false
}

// valid runs one plain request on d (activated) and reports whether it
// worked; a failure is a miss of kind, except an unanswered network
// receive.
func (a *attacker) valid(kind string, d *vdev) bool {
	d.st.validN++
	var ok bool
	var why string
	switch d.kind {
	case "rng":
		ok, why = a.rngValid(d)
	case "blk":
		ok, why = a.blkValid(d)
	case "net":
		ok, why = a.netValid(d)
		if !ok && why == "unanswered" {
			d.st.rxUnanswered++
			d.st.validN--
			return false
		}
	}
	if ok {
		d.st.validOK++
		return true
	}
	a.miss(kind, d, "a valid request failed: %s", why)
	return false
}

// slot returns the next free descriptor index of r for a chain of n.
func (r *ring) slot(n int) uint16 { return uint16(int(r.idx)*n) % r.size }

// rngValid asks for a random number of random bytes at a random offset.
func (a *attacker) rngValid(d *vdev) (bool, string) {
	r := d.rings[0]
	p := r.data[a.rnd.IntN(len(r.data))]
	p.fill(guard)
	off, n := a.rnd.IntN(2048), 1+a.rnd.IntN(2048)
	h := r.slot(1)
	putDesc(r.desc.b, int(h), p.pa+uint64(off), uint32(n), dWrite, 0)
	want := r.idx + 1
	r.push(h)
	d.kick(0)
	if !r.waitUsed(want, usedTimeout) {
		return false, fmt.Sprintf("used index %d, want %d (status %#x)", r.usedIdx(), want, d.status())
	}
	id, got := r.usedElem(want - 1)
	switch {
	case id != uint32(h) || got != uint32(n):
		return false, fmt.Sprintf("used element (%d, %d), want (%d, %d)", id, got, h, n)
	case overrun(p, off, n):
		return false, "the device wrote outside the buffer"
	case n >= 8 && bytes.Count(p.b[off:off+n], []byte{guard}) == n:
		return false, "the buffer was not filled"
	}
	return true, ""
}

// blkRequest posts one virtio-blk request: a header, an optional data
// buffer (writable for reads, readable for writes) and a status byte,
// each at a random offset of its own page; it returns the status byte's
// page offset.
type blkReq struct {
	typ     uint32
	sector  uint64
	data    *page
	off, n  int
	status  *page
	statOff int
}

func (a *attacker) postBlk(d *vdev, q blkReq) uint16 {
	r := d.rings[0]
	hdr := r.data[0]
	binary.LittleEndian.PutUint32(hdr.b[0:], q.typ)
	binary.LittleEndian.PutUint32(hdr.b[4:], 0)
	binary.LittleEndian.PutUint64(hdr.b[8:], q.sector)
	h := r.slot(3)
	i := h
	next := func() uint16 { return (i + 1) % r.size }
	putDesc(r.desc.b, int(i), hdr.pa, 16, dNext, next())
	i = next()
	if q.data != nil {
		fl := uint16(dNext)
		if q.typ != 1 {
			fl |= dWrite
		}
		putDesc(r.desc.b, int(i), q.data.pa+uint64(q.off), uint32(q.n), fl, next())
		i = next()
	}
	putDesc(r.desc.b, int(i), q.status.pa+uint64(q.statOff), 1, dWrite, 0)
	r.push(h)
	return h
}

// capacity reads the disk's size in sectors from the device config.
func (d *vdev) capacity() uint64 { return d.r(offDevice, 8) }

// blkValid asks for the disk's serial (GET_ID), or writes a random
// sector and reads it back.
func (a *attacker) blkValid(d *vdev) (bool, string) {
	r := d.rings[0]
	stat := r.data[3]
	stat.fill(guard)
	so := a.rnd.IntN(pageSize)
	if a.rnd.IntN(2) == 0 {
		id := r.data[1]
		id.fill(guard)
		off := a.rnd.IntN(pageSize - 20)
		want := r.idx + 1
		a.postBlk(d, blkReq{typ: 8, data: id, off: off, n: 20, status: stat, statOff: so})
		d.kick(0)
		if !r.waitUsed(want, usedTimeout) {
			return false, fmt.Sprintf("GET_ID: used index %d, want %d (status %#x)", r.usedIdx(), want, d.status())
		}
		if stat.b[so] != 0 || !bytes.HasPrefix(id.b[off:], []byte("colibri-disk")) {
			return false, fmt.Sprintf("GET_ID: status %d, id %q", stat.b[so], id.b[off:off+20])
		}
		if overrun(id, off, 20) || overrun(stat, so, 1) {
			return false, "GET_ID: the device wrote outside the buffers"
		}
		return true, ""
	}
	capa := d.capacity()
	if capa < 8 {
		return false, fmt.Sprintf("capacity %d sectors", capa)
	}
	sector := a.rnd.Uint64N(capa - 7)
	n := 512 * (1 + a.rnd.IntN(7))
	src, dst := r.data[1], r.data[2]
	for i := range src.b[:n] {
		src.b[i] = byte(a.rnd.Uint32())
	}
	want := r.idx + 1
	a.postBlk(d, blkReq{typ: 1, sector: sector, data: src, off: 0, n: n, status: stat, statOff: so})
	d.kick(0)
	if !r.waitUsed(want, usedTimeout) || stat.b[so] != 0 {
		return false, fmt.Sprintf("write of sector %d: used %d/%d, status %d", sector, r.usedIdx(), want, stat.b[so])
	}
	dst.fill(guard)
	stat.fill(guard)
	off := 512 * a.rnd.IntN(pageSize/512-n/512+1)
	want++
	a.postBlk(d, blkReq{typ: 0, sector: sector, data: dst, off: off, n: n, status: stat, statOff: so})
	d.kick(0)
	if !r.waitUsed(want, usedTimeout) || stat.b[so] != 0 {
		return false, fmt.Sprintf("read of sector %d: used %d/%d, status %d", sector, r.usedIdx(), want, stat.b[so])
	}
	if !bytes.Equal(dst.b[off:off+n], src.b[:n]) {
		return false, fmt.Sprintf("sector %d read back differs from what was written", sector)
	}
	if overrun(dst, off, n) || overrun(stat, so, 1) {
		return false, "read: the device wrote outside the buffers"
	}
	return true, ""
}

// Ethernet and ARP.
const (
	hdrLen   = 12 // virtio_net_hdr with VERSION_1
	ethARP   = 0x0806
	arpFrame = 42
)

var broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// arpRequest writes into b (at least arpFrame bytes) an ARP request from
// src (MAC) and ip asking for target.
func arpRequest(b []byte, src [6]byte, ip, target [4]byte) {
	copy(b[0:6], broadcast[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:], ethARP)
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(a[2:], 0x0800) // IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1) // request
	copy(a[8:14], src[:])
	copy(a[14:18], ip[:])
	clear(a[18:24])
	copy(a[24:28], target[:])
}

// sendARP queues an ARP request for the peer on the transmit queue with
// source MAC src and kicks it; it returns the used index that means it
// was sent.
func (a *attacker) sendARP(d *vdev, src [6]byte) uint16 {
	r := d.rings[1]
	p := r.data[int(r.idx)%len(r.data)]
	clear(p.b[:hdrLen])
	arpRequest(p.b[hdrLen:], src, a.ip, a.peer)
	h := r.slot(1)
	putDesc(r.desc.b, int(h), p.pa, hdrLen+arpFrame, 0, 0)
	r.push(h)
	d.kick(1)
	return r.idx
}

// postRx posts n receive buffers of a page each.
func (a *attacker) postRx(d *vdev, n int) {
	r := d.rings[0]
	for i := 0; i < n; i++ {
		p := r.data[int(r.idx)%len(r.data)]
		p.fill(guard)
		h := r.slot(1)
		putDesc(r.desc.b, int(h), p.pa, pageSize, dWrite, 0)
		r.push(h)
	}
	d.kick(0)
}

// netValid sends an ARP request for the peer and waits for its reply in
// a receive buffer.
func (a *attacker) netValid(d *vdev) (bool, string) {
	rx, tx := d.rings[0], d.rings[1]
	first := rx.idx
	a.postRx(d, 2)
	sent := a.sendARP(d, d.mac)
	if !tx.waitUsed(sent, usedTimeout) {
		return false, fmt.Sprintf("transmit: used index %d, want %d (status %#x)", tx.usedIdx(), sent, d.status())
	}
	for end := time.Now().Add(rxTimeout); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		got := rx.usedIdx()
		for i := first; i != got && i-first < 2; i++ {
			id, n := rx.usedElem(i)
			if id >= uint32(rx.size) || n < hdrLen+arpFrame || n > pageSize {
				return false, fmt.Sprintf("receive: used element (%d, %d)", id, n)
			}
			p := rx.data[int(id)%len(rx.data)]
			f := p.b[hdrLen:]
			if overrun(p, 0, int(n)) {
				return false, "receive: the device wrote outside the buffer"
			}
			if binary.BigEndian.Uint16(f[12:]) == ethARP && binary.BigEndian.Uint16(f[20:]) == 2 &&
				bytes.Equal(f[28:32], a.peer[:]) && bytes.Equal(f[0:6], d.mac[:]) {
				a.peerMAC = [6]byte(f[22:28])
				return true, ""
			}
		}
		if d.needsReset() {
			return false, fmt.Sprintf("the device needs a reset (status %#x)", d.status())
		}
	}
	return false, "unanswered"
}
