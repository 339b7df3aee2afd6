// Package blk is virtio-blk over a raw image file: reads, writes, flushes
// (fsync) and GET_ID (a configured serial, never a host path), with a
// read-only mode, served from the queue's worker goroutine with positioned
// I/O straight into guest memory. The image is flock()ed while open:
// shared read-only, exclusive read-write. A failed write or fsync makes
// every later flush fail until the device is reset.
package blk

import (
	"encoding/binary"
	"fmt"

	"github.com/colibrivm/colibri/vmm/virtio/virtq"
)

// Request types and status values (virtio 1.2, section 5.2.6).
const (
	TypeIn    = 0
	TypeOut   = 1
	TypeFlush = 4
	TypeGetID = 8

	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2

	SectorSize = 512
	headerLen  = 16
	idLen      = 20
)

// Request is a parsed virtio-blk request. Data segments alias guest memory.
type Request struct {
	Type   uint32
	Sector uint64
	// Data holds the payload segments: readable for writes, writable for
	// reads and GET_ID.
	Data []virtq.Seg
	// Status is the byte the device writes the result to.
	Status []byte
}

// DataLen totals the payload bytes.
func (r *Request) DataLen() uint64 {
	var n uint64
	for _, s := range r.Data {
		n += uint64(len(s.Buf))
	}
	return n
}

// Parse splits a chain into a request: a 16-byte readable header (possibly
// split over segments), payload segments, and a final writable segment
// whose last byte is the status. data is reused for Data.
func Parse(c *virtq.Chain, data []virtq.Seg) (Request, error) {
	r := Request{Data: data[:0]}
	segs := c.Segs
	if len(segs) == 0 {
		return r, fmt.Errorf("empty chain")
	}
	last := segs[len(segs)-1]
	if !last.Write || len(last.Buf) == 0 {
		return r, fmt.Errorf("no writable status byte at the end of the chain")
	}
	r.Status = last.Buf[len(last.Buf)-1:]
	// Gather the header from the leading readable bytes.
	var hdr [headerLen]byte
	got := 0
	i := 0
	var rest []byte // unread tail of the segment that completed the header
	for ; i < len(segs)-1 && got < headerLen; i++ {
		if segs[i].Write {
			return r, fmt.Errorf("request header in a writable buffer")
		}
		n := copy(hdr[got:], segs[i].Buf)
		got += n
		if n < len(segs[i].Buf) {
			rest = segs[i].Buf[n:]
		}
	}
	if got < headerLen {
		return r, fmt.Errorf("request header is %d bytes, want %d", got, headerLen)
	}
	r.Type = binary.LittleEndian.Uint32(hdr[0:])
	r.Sector = binary.LittleEndian.Uint64(hdr[8:])
	if len(rest) > 0 {
		r.Data = append(r.Data, virtq.Seg{Buf: rest})
	}
	for ; i < len(segs)-1; i++ {
		r.Data = append(r.Data, segs[i])
	}
	// The status segment may carry payload before its last byte.
	if len(last.Buf) > 1 {
		r.Data = append(r.Data, virtq.Seg{Buf: last.Buf[:len(last.Buf)-1], Write: true})
	}
	// Payload direction must match the request.
	for _, s := range r.Data {
		switch r.Type {
		case TypeIn, TypeGetID:
			if !s.Write {
				return r, fmt.Errorf("read request with a device-readable data buffer")
			}
		case TypeOut:
			if s.Write {
				return r, fmt.Errorf("write request with a device-writable data buffer")
			}
		}
	}
	return r, nil
}
