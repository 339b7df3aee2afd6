//go:build linux && amd64

package main

import "encoding/binary"

// A ring attack writes one malformed chain (or ring index) into queue
// r and makes it available; the device must mark itself as needing a
// reset when it meets it. buf is a page of the attacker's for buffers:
// every device-writable buffer lies inside it, so a device that wrongly
// accepted the chain could only write there.
type ringAttack struct {
	name  string
	build func(a *attacker, d *vdev, r *ring, buf *page)
}

// harmless fills descriptor i with a small readable buffer in buf.
func harmless(r *ring, i int, buf *page, flags, next uint16) {
	putDesc(r.desc.b, i, buf.pa, 64, flags, next)
}

var ringAttacks = []ringAttack{
	{"desc-loop", func(a *attacker, d *vdev, r *ring, buf *page) {
		h := int(r.slot(2))
		switch a.rnd.IntN(3) {
		case 0: // a descriptor that chains to itself
			harmless(r, h, buf, dNext, uint16(h))
		case 1: // two that chain to each other
			o := (h + 1) % int(r.size)
			harmless(r, h, buf, dNext, uint16(o))
			harmless(r, o, buf, dNext, uint16(h))
		default: // the whole table in a circle
			for i := 0; i < int(r.size); i++ {
				harmless(r, i, buf, dNext, uint16((i+1)%int(r.size)))
			}
		}
		r.push(uint16(h))
	}},
	{"indirect-loop", func(a *attacker, d *vdev, r *ring, buf *page) {
		t := r.ind[0]
		n := 1 + a.rnd.IntN(64)
		for i := 0; i < n; i++ {
			putDesc(t.b, i, buf.pa, 32, dNext, uint16((i+1)%n))
		}
		h := int(r.slot(1))
		putDesc(r.desc.b, h, t.pa, uint32(16*n), dIndirect, 0)
		r.push(uint16(h))
	}},
	{"indirect-nested", func(a *attacker, d *vdev, r *ring, buf *page) {
		t, u := r.ind[0], r.ind[1]
		putDesc(u.b, 0, buf.pa, 32, 0, 0)
		putDesc(t.b, 0, u.pa, 16, dIndirect, 0)
		if a.rnd.IntN(2) == 0 { // an indirect table that names itself
			putDesc(t.b, 0, t.pa, 16, dIndirect, 0)
		}
		h := int(r.slot(1))
		putDesc(r.desc.b, h, t.pa, 16*uint32(1+a.rnd.IntN(4)), dIndirect, 0)
		r.push(uint16(h))
	}},
	{"indirect-size", func(a *attacker, d *vdev, r *ring, buf *page) {
		t := r.ind[0]
		for i := 0; i < pageSize/16; i++ {
			putDesc(t.b, i, buf.pa, 16, dNext, uint16(i+1))
		}
		sizes := []uint32{0, 8, 24, 16*1024 + 16, 16 * 4096, 0xfffffff0, 0xffffffff, 0x80000000}
		h := int(r.slot(1))
		putDesc(r.desc.b, h, t.pa, sizes[a.rnd.IntN(len(sizes))], dIndirect, 0)
		r.push(uint16(h))
	}},
	{"indirect-chained", func(a *attacker, d *vdev, r *ring, buf *page) {
		t := r.ind[0]
		putDesc(t.b, 0, buf.pa, 16, 0, 0)
		h := int(r.slot(2))
		o := (h + 1) % int(r.size)
		if a.rnd.IntN(2) == 0 { // an indirect descriptor with NEXT
			putDesc(r.desc.b, h, t.pa, 16, dIndirect|dNext, uint16(o))
			harmless(r, o, buf, 0, 0)
		} else { // an indirect descriptor after a direct one
			harmless(r, h, buf, dNext, uint16(o))
			putDesc(r.desc.b, o, t.pa, 16, dIndirect, 0)
		}
		r.push(uint16(h))
	}},
	{"indirect-outside", func(a *attacker, d *vdev, r *ring, buf *page) {
		addr, n := a.outside(d)
		h := int(r.slot(1))
		putDesc(r.desc.b, h, addr, (n+15)&^15, dIndirect, 0)
		r.push(uint16(h))
	}},
	{"len-4g", func(a *attacker, d *vdev, r *ring, buf *page) {
		// Lengths near 4 GiB from a valid address run past the end of RAM.
		var lens []uint32
		for _, n := range []uint32{0xffffffff, 0xfffffffe, 0xfffff000, 0x80000000, 0xc0000000} {
			if uint64(n) > a.ramEnd { // never a length that could fit
				lens = append(lens, n)
			}
		}
		n := lens[a.rnd.IntN(len(lens))]
		fl := uint16(0)
		if a.rnd.IntN(2) == 0 {
			fl = dWrite
		}
		h := int(r.slot(2))
		if a.rnd.IntN(2) == 0 {
			putDesc(r.desc.b, h, buf.pa, n, fl, 0)
		} else { // inside an indirect table, after a good buffer
			t := r.ind[0]
			putDesc(t.b, 0, buf.pa, 16, dNext, 1)
			putDesc(t.b, 1, buf.pa, n, fl, 0)
			putDesc(r.desc.b, h, t.pa, 32, dIndirect, 0)
		}
		r.push(uint16(h))
	}},
	{"addr-outside", func(a *attacker, d *vdev, r *ring, buf *page) {
		addr, n := a.outside(d)
		h := int(r.slot(2))
		o := (h + 1) % int(r.size)
		if a.rnd.IntN(2) == 0 {
			putDesc(r.desc.b, h, addr, n, 0, 0)
		} else { // the second buffer of a chain
			harmless(r, h, buf, dNext, uint16(o))
			putDesc(r.desc.b, o, addr, n, 0, 0)
		}
		r.push(uint16(h))
	}},
	{"chain-over-4g", func(a *attacker, d *vdev, r *ring, buf *page) {
		// Readable buffers anywhere in RAM (the device only reads them)
		// adding up to more than 4 GiB, ending in a small well-formed
		// request, so that lengths counted in 32 bits wrap to a small,
		// plausible total.
		// 64 or 65 buffers of 64 MiB (129 or 130 of 32 MiB in less RAM):
		// the table fits its page.
		seg := uint64(64 << 20)
		if a.ramEnd < 96<<20 {
			seg = 32 << 20
		}
		k := int((1<<32)/seg) + a.rnd.IntN(2)
		at := a.pickRAM(seg)
		t := r.ind[0]
		i := 0
		next := func() uint16 { i++; return uint16(i) }
		switch d.kind {
		case "net": // a frame whose header and ARP fit the first buffer
			clear(buf.b[:hdrLen])
			arpRequest(buf.b[hdrLen:], d.mac, a.ip, a.peer)
			putDesc(t.b, i, buf.pa, hdrLen+arpFrame, dNext, uint16(i+1))
			next()
		case "blk": // a write header
			binary.LittleEndian.PutUint32(buf.b[0:], 1)
			binary.LittleEndian.PutUint64(buf.b[8:], 0)
			putDesc(t.b, i, buf.pa, 16, dNext, uint16(i+1))
			next()
		}
		for j := 0; j < k; j++ {
			fl := uint16(dNext)
			if j == k-1 && d.kind == "net" {
				fl = 0
			}
			putDesc(t.b, i, at, uint32(seg), fl, uint16(i+1))
			next()
		}
		switch d.kind {
		case "rng": // a writable buffer
			putDesc(t.b, i, buf.pa+2048, 64, dWrite, 0)
			next()
		case "blk": // the status byte
			putDesc(t.b, i, buf.pa+2048, 1, dWrite, 0)
			next()
		}
		h := int(r.slot(1))
		putDesc(r.desc.b, h, t.pa, uint32(16*i), dIndirect, 0)
		r.push(uint16(h))
	}},
	{"index-jump", func(a *attacker, d *vdev, r *ring, buf *page) {
		for i := 0; i < int(r.size); i++ {
			harmless(r, i, buf, 0, 0)
		}
		jumps := []uint16{r.size + 1, r.size + uint16(a.rnd.IntN(1000)) + 1, 0x8000, 0xffff}
		r.setAvailIdx(r.idx + jumps[a.rnd.IntN(len(jumps))])
	}},
	{"head-oob", func(a *attacker, d *vdev, r *ring, buf *page) {
		heads := []uint16{r.size, r.size + uint16(a.rnd.IntN(int(0x10000-uint32(r.size)))), 0xffff}
		r.push(heads[a.rnd.IntN(len(heads))])
	}},
	{"next-oob", func(a *attacker, d *vdev, r *ring, buf *page) {
		h := int(r.slot(1))
		harmless(r, h, buf, dNext, r.size+uint16(a.rnd.IntN(int(0x10000-uint32(r.size)))))
		r.push(uint16(h))
	}},
	{"write-then-read", func(a *attacker, d *vdev, r *ring, buf *page) {
		h := int(r.slot(2))
		o := (h + 1) % int(r.size)
		putDesc(r.desc.b, h, buf.pa, 64, dWrite|dNext, uint16(o))
		harmless(r, o, buf, 0, 0)
		r.push(uint16(h))
	}},
}
