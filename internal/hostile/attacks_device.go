//go:build linux && amd64

package main

import (
	"encoding/binary"
	"time"
)

// Attacks on each device's requests: frames, control commands, receive
// buffers, disk requests, and the race on a frame's source address.

func (a *attacker) netNoPair(d *vdev, kind string) {
	l := a.randomLayout(d)
	l.size[a.rnd.IntN(2)] = 0 // the receive or the transmit queue left disabled
	if a.up(d, l) {
		a.miss(kind, d, "activation without a queue pair was accepted")
		return
	}
	a.expectBreak(kind, d, false)
}

// txChain posts one transmit chain of the given buffers.
func txChain(r *ring, bufs []struct {
	addr  uint64
	n     uint32
	flags uint16
}) {
	h := r.slot(4)
	i := h
	for j, b := range bufs {
		fl := b.flags
		next := (i + 1) % r.size
		if j < len(bufs)-1 {
			fl |= dNext
		}
		putDesc(r.desc.b, int(i), b.addr, b.n, fl, next)
		i = next
	}
	r.push(h)
}

type buf = struct {
	addr  uint64
	n     uint32
	flags uint16
}

func (a *attacker) txMalformed(d *vdev, kind string) {
	l, ok := a.upValid(d)
	if !ok {
		return
	}
	r := d.rings[1]
	p := r.data[0]
	clear(p.b[:hdrLen])
	arpRequest(p.b[hdrLen:], d.mac, a.ip, a.peer)
	frame := uint32(hdrLen + arpFrame)
	csum := l.feat&1 != 0 // VIRTIO_NET_F_CSUM
	tso := csum && l.feat&(1<<11|1<<12) != 0
	hp := r.data[1] // a header page for bad offload requests
	n := 0
	post := func(bufs ...buf) { txChain(r, bufs); n++ }
	for i := 0; i < 4; i++ {
		switch a.rnd.IntN(7) {
		case 0: // shorter than the header
			post(buf{p.pa, uint32(1 + a.rnd.IntN(hdrLen-1)), 0})
		case 1: // a runt frame
			post(buf{p.pa, uint32(hdrLen + a.rnd.IntN(14)), 0})
		case 2: // a device-writable buffer in a transmit chain
			post(buf{p.pa, frame, 0}, buf{r.data[2].pa, 64, dWrite})
		case 3: // larger than any frame, from anywhere in RAM
			n := uint32(65*1024 + 512 + a.rnd.IntN(1<<20))
			post(buf{p.pa, hdrLen, 0}, buf{a.pickRAM(uint64(n)), n, 0})
		case 4: // a checksum position outside the frame
			if !csum {
				continue
			}
			copy(hp.b[hdrLen:], p.b[hdrLen:frame])
			clear(hp.b[:hdrLen])
			hp.b[0] = 1 // NEEDS_CSUM
			binary.LittleEndian.PutUint16(hp.b[6:], uint16(arpFrame-1+a.rnd.IntN(0x10000-arpFrame)))
			binary.LittleEndian.PutUint16(hp.b[8:], uint16(a.rnd.IntN(0x10000)))
			post(buf{hp.pa, frame, 0})
		case 5: // a GSO type the device does not offer, or ECN
			if !tso {
				continue
			}
			copy(hp.b[hdrLen:], p.b[hdrLen:frame])
			clear(hp.b[:hdrLen])
			hp.b[1] = []byte{3, 5, 0x81, 0x84, 0x7f}[a.rnd.IntN(5)]
			binary.LittleEndian.PutUint16(hp.b[4:], 1400)
			post(buf{hp.pa, frame, 0})
		default: // TCPv4 GSO with a segment size of 0
			if !tso {
				continue
			}
			copy(hp.b[hdrLen:], p.b[hdrLen:frame])
			clear(hp.b[:hdrLen])
			hp.b[1] = 1
			post(buf{hp.pa, frame, 0})
		}
		d.kick(1)
		// One at a time: the header page is reused.
		if !r.waitUsed(r.idx, usedTimeout) {
			a.miss(kind, d, "malformed frame %d: not returned (used %d, want %d, status %#x)", n, r.usedIdx(), r.idx, d.status())
			return
		}
	}
	d.st.expErrors += n
	if d.needsReset() {
		a.miss(kind, d, "a malformed frame broke the transmit queue")
		return
	}
	a.valid(kind, d)
}

func (a *attacker) txSpoof(d *vdev, kind string) {
	if _, ok := a.upValid(d); !ok {
		return
	}
	r := d.rings[1]
	for i := 0; i < 4; i++ {
		var src [6]byte
		for j := range src {
			src[j] = byte(a.rnd.Uint32())
		}
		src[0] &^= 1 // unicast: the port's binding, not the multicast check, drops it
		if src == d.mac {
			src[5]++
		}
		sent := a.sendARP(d, src)
		if !r.waitUsed(sent, usedTimeout) {
			a.miss(kind, d, "spoofed frame not returned (status %#x)", d.status())
			return
		}
		d.st.spoofed++
	}
	a.valid(kind, d)
}

func (a *attacker) ctrlBad(d *vdev, kind string) {
	if d.nq < 3 {
		return
	}
	if _, ok := a.upValid(d); !ok {
		return
	}
	r := d.rings[2]
	cmd, ack := r.data[0], r.data[1]
	for i := 0; i < 4; i++ {
		ack.fill(guard)
		good := false
		cmd.b[0], cmd.b[1] = 4, 0 // VIRTIO_NET_CTRL_MQ, VQ_PAIRS_SET
		switch a.rnd.IntN(5) {
		case 0:
			cmd.b[0] = byte(5 + a.rnd.IntN(250)) // no such class
			binary.LittleEndian.PutUint16(cmd.b[2:], 1)
		case 1:
			binary.LittleEndian.PutUint16(cmd.b[2:], 0)
		case 2:
			binary.LittleEndian.PutUint16(cmd.b[2:], uint16(2+a.rnd.IntN(0xfffe))) // more pairs than offered
		case 3:
			cmd.b[1] = byte(1 + a.rnd.IntN(255)) // no such command
		default:
			binary.LittleEndian.PutUint16(cmd.b[2:], 1)
			good = true
		}
		h := r.slot(2)
		o := (h + 1) % r.size
		putDesc(r.desc.b, int(h), cmd.pa, 4, dNext, o)
		putDesc(r.desc.b, int(o), ack.pa, 1, dWrite, 0)
		want := r.idx + 1
		r.push(h)
		d.kick(2)
		if !r.waitUsed(want, usedTimeout) {
			a.miss(kind, d, "control command not answered (status %#x)", d.status())
			return
		}
		switch {
		case good && ack.b[0] != 0:
			a.miss(kind, d, "VQ_PAIRS_SET 1 answered %d", ack.b[0])
		case !good && ack.b[0] != 1:
			a.miss(kind, d, "a bad control command answered %d, want 1 (error)", ack.b[0])
		case overrun(ack, 0, 1):
			a.miss(kind, d, "the control ack was written outside its byte")
		case !good:
			d.st.expErrors++
		}
	}
	a.valid(kind, d)
}

// rxReadonly posts receive buffers the device may only read: a frame
// cannot go there (dropped and counted), and the queue is not broken.
func (a *attacker) rxReadonly(d *vdev, kind string) {
	if _, ok := a.upValid(d); !ok {
		return
	}
	r := d.rings[0]
	for i := 0; i < 2; i++ {
		h := r.slot(1)
		r.data[i].fill(guard)
		putDesc(r.desc.b, int(h), r.data[i].pa, pageSize, 0, 0)
		r.push(h)
	}
	d.kick(0)
	a.sendARP(d, d.mac)
	time.Sleep(100 * time.Millisecond)
	if r.usedIdx() != 0 || overrun(r.data[0], 0, 0) || overrun(r.data[1], 0, 0) {
		a.miss(kind, d, "a frame was written into device-readable receive buffers")
	}
	a.noteBreak(kind, d)
}

func (a *attacker) blkBad(d *vdev, kind string) {
	if _, ok := a.upValid(d); !ok {
		return
	}
	r := d.rings[0]
	capa := d.capacity()
	stat := r.data[3]
	for i := 0; i < 4; i++ {
		stat.fill(guard)
		want := r.idx + 1
		wantStatus := byte(1) // IOERR
		switch a.rnd.IntN(7) {
		case 0: // beyond the end of the disk
			a.postBlk(d, blkReq{typ: 0, sector: capa + a.rnd.Uint64N(1<<40), data: r.data[1], n: 512, status: stat})
		case 1: // straddling the end
			a.postBlk(d, blkReq{typ: uint32(a.rnd.IntN(2)), sector: capa - 1, data: r.data[1], n: 1024, status: stat})
		case 2: // no such request type
			a.postBlk(d, blkReq{typ: uint32(9 + a.rnd.IntN(1000)), data: r.data[1], n: 512, status: stat})
			wantStatus = 2 // UNSUPP
		case 3: // not a whole number of sectors
			a.postBlk(d, blkReq{typ: 0, data: r.data[1], n: 1 + a.rnd.IntN(511), status: stat})
		case 4: // a read into a device-readable buffer
			h := r.slot(3)
			hdr := r.data[0]
			binary.LittleEndian.PutUint32(hdr.b[0:], 0)
			binary.LittleEndian.PutUint64(hdr.b[8:], 0)
			putDesc(r.desc.b, int(h), hdr.pa, 16, dNext, (h+1)%r.size)
			putDesc(r.desc.b, int((h+1)%r.size), r.data[1].pa, 512, dNext, (h+2)%r.size)
			putDesc(r.desc.b, int((h+2)%r.size), stat.pa, 1, dWrite, 0)
			r.push(h)
		case 5: // a header cut short
			h := r.slot(3)
			putDesc(r.desc.b, int(h), r.data[0].pa, uint32(1+a.rnd.IntN(15)), dNext, (h+1)%r.size)
			putDesc(r.desc.b, int((h+1)%r.size), stat.pa, 1, dWrite, 0)
			r.push(h)
		default: // no status byte at all
			h := r.slot(3)
			putDesc(r.desc.b, int(h), r.data[0].pa, 16, 0, 0)
			r.push(h)
			wantStatus = guard
		}
		d.kick(0)
		if !r.waitUsed(want, usedTimeout) {
			a.miss(kind, d, "bad request %d not returned (status %#x)", i, d.status())
			return
		}
		if stat.b[0] != wantStatus || overrun(stat, 0, 1) {
			a.miss(kind, d, "bad request %d: status byte %d, want %d", i, stat.b[0], wantStatus)
		}
		d.st.expErrors++
	}
	if d.needsReset() {
		a.miss(kind, d, "bad requests broke the queue")
		return
	}
	a.valid(kind, d)
}

// forgedMAC is the source address tx-toctou slips in: nobody's on the
// switch (locally administered), so a bystander that receives a frame
// from it knows the switch let a forged source through.
var forgedMAC = [6]byte{0x02, 0x66, 0x66, 0x66, 0x66, 0x66}

// txToctou races the switch's source-address check: every descriptor
// of a full transmit ring points at one frame (to the peer, from this
// guest's own MAC), and while the poller switches them the guest keeps
// rewriting the frame's source address between its own and forgedMAC.
// A switch that checks the source in guest memory and copies the frame
// from there afterwards delivers some with the forged source (the
// bystander's sniffer counts them); one that checks what it delivers
// never does. The rewriting stops at the guest's own address.
func (a *attacker) txToctou(d *vdev, kind string) {
	if a.peerMAC == [6]byte{} {
		if _, ok := a.upValid(d); !ok || !a.valid(kind, d) || a.peerMAC == [6]byte{} {
			return
		}
	}
	l := a.randomLayout(d)
	l.size[1] = min(d.qmax[1], 256)
	if !a.up(d, l) {
		a.setupFailures++
		return
	}
	r := d.rings[1]
	p := r.data[0]
	clear(p.b[:hdrLen])
	f := p.b[hdrLen:]
	copy(f[0:6], a.peerMAC[:])
	copy(f[6:12], d.mac[:])
	f[12], f[13] = 0x88, 0xb5 // IEEE local experimental ethertype
	for i := 14; i < 60; i++ {
		f[i] = byte(i)
	}
	src := f[6:12]
	for burst := 0; burst < 8; burst++ {
		for i := uint16(0); i < r.size; i++ {
			h := r.slot(1)
			putDesc(r.desc.b, int(h), p.pa, hdrLen+60, 0, 0)
			binary.LittleEndian.PutUint16(r.avail.b[4+2*int(r.idx%r.size):], h)
			r.idx++
		}
		r.setAvailIdx(r.idx)
		d.kick(1)
		for end := time.Now().Add(usedTimeout); r.usedIdx() != r.idx && time.Now().Before(end); {
			// Each address holds for about as long as the other.
			for j := 0; j < 64; j++ {
				setMAC(src, &forgedMAC)
				spin(2 * time.Microsecond)
				setMAC(src, &d.mac)
				spin(2 * time.Microsecond)
			}
		}
		if r.usedIdx() != r.idx {
			a.miss(kind, d, "transmit ring not drained (used %d, want %d, status %#x)", r.usedIdx(), r.idx, d.status())
			return
		}
	}
	a.noteBreak(kind, d)
}

// setMAC stores m into b; not inlined, so no two calls are merged.
//
//go:noinline
func setMAC(b []byte, m *[6]byte) { copy(b, m[:]) }

// spin busy-waits for d (time.Now reads kvmclock without an exit).
func spin(d time.Duration) {
	for t := time.Now(); time.Since(t) < d; {
	}
}
