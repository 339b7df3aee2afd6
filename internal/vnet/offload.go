// Package vnet is the virtio-net header's offload requests (virtio 1.2,
// 5.1.6): reading and writing the header, checking what an untrusted
// sender asks for, and finishing in software what a receiver cannot
// (checksums, TCP segmentation). The virtio-net device, the TAP uplink and
// the switch share it; it imports nothing of theirs.
package vnet

import (
	"encoding/binary"
	"errors"
)

// HeaderLen is the size of struct virtio_net_hdr with VIRTIO_F_VERSION_1
// (num_buffers included).
const HeaderLen = 12

// Header flags and the GSO type bit this package refuses.
const (
	flagNeedsCsum = 1
	gsoECN        = 0x80
)

// MaxFrame is the largest frame, headers included, that a GSO request can
// describe: a 64 KiB IP packet behind an Ethernet header with a VLAN tag,
// rounded up.
const MaxFrame = 64<<10 + 256

// ethHeaderLen is an Ethernet header without VLAN tag.
const ethHeaderLen = 14

// ErrHeader is returned by ParseHeader for a header no device accepts.
var ErrHeader = errors.New("virtio-net header: unsupported GSO type")

// ParseHeader reads the offload requests of a virtio-net header (at least
// 10 bytes: num_buffers is not read). csum and gso say which offloads the
// sender may use (negotiated); requests beyond them are ignored (a sender
// that did not negotiate checksum offload sends complete frames whatever
// its flags say). GSO types other than TCPv4/TCPv6, and ECN, are errors.
func ParseHeader(h []byte, csum, gso bool) (Offload, error) {
	var o Offload
	if !csum {
		return o, nil
	}
	if h[0]&flagNeedsCsum != 0 {
		o.NeedsCsum = true
		o.CsumStart = binary.LittleEndian.Uint16(h[6:])
		o.CsumOffset = binary.LittleEndian.Uint16(h[8:])
	}
	if typ := h[1]; typ != GSONone {
		if !gso || typ&gsoECN != 0 || (typ != GSOTCPv4 && typ != GSOTCPv6) {
			return Offload{}, ErrHeader
		}
		o.GSOType = typ
		o.HdrLen = binary.LittleEndian.Uint16(h[2:])
		o.GSOSize = binary.LittleEndian.Uint16(h[4:])
	}
	return o, nil
}

// PutHeader writes o into the first 10 bytes of a virtio-net header
// (num_buffers is left alone).
func PutHeader(h []byte, o Offload) {
	clear(h[:10])
	if o.NeedsCsum {
		h[0] = flagNeedsCsum
		binary.LittleEndian.PutUint16(h[6:], o.CsumStart)
		binary.LittleEndian.PutUint16(h[8:], o.CsumOffset)
	}
	if o.GSOType != GSONone {
		h[1] = o.GSOType
		binary.LittleEndian.PutUint16(h[2:], o.HdrLen)
		binary.LittleEndian.PutUint16(h[4:], o.GSOSize)
	}
}

// GSO types of an Offload (the virtio-net header's gso_type values).
const (
	GSONone  = 0
	GSOTCPv4 = 1
	GSOTCPv6 = 4
)

// Offload is the work a sender left undone in a frame, as the virtio-net
// header describes it (virtio 1.2, 5.1.6.2): a transport checksum to fill
// in, and a TCP segment larger than the MTU to cut into GSOSize pieces.
// The zero Offload is a complete frame.
type Offload struct {
	// NeedsCsum: the 16-bit one's-complement checksum of
	// frame[CsumStart:] goes at CsumStart+CsumOffset (which holds the
	// pseudo-header sum meanwhile).
	NeedsCsum             bool
	CsumStart, CsumOffset uint16
	// GSOType is GSONone, GSOTCPv4 or GSOTCPv6; GSOSize the payload bytes
	// per segment; HdrLen the sender's hint of the headers' length (passed
	// on, never trusted: segmentation finds the headers itself).
	GSOType uint8
	GSOSize uint16
	HdrLen  uint16
}

// Pending reports whether the frame is incomplete.
func (o Offload) Pending() bool { return o.NeedsCsum || o.GSOType != GSONone }

// Errors of Offload.Check and finishing offloads.
var (
	errCsumRange  = errors.New("offload: checksum position outside the frame")
	errGSOType    = errors.New("offload: unsupported GSO type")
	errGSOSize    = errors.New("offload: GSO size 0")
	errGSOHeaders = errors.New("offload: GSO frame without the TCP/IP headers its type says")
	errGSOTooMany = errors.New("offload: GSO frame cut into too many segments")
)

// Check validates o against a frame of n bytes: what a device does with
// a header from an untrusted guest before anything else reads it.
func (o Offload) Check(n int) error {
	if o.NeedsCsum && int(o.CsumStart)+int(o.CsumOffset)+2 > n {
		return errCsumRange
	}
	switch o.GSOType {
	case GSONone:
	case GSOTCPv4, GSOTCPv6:
		if o.GSOSize == 0 {
			return errGSOSize
		}
	default:
		return errGSOType
	}
	return nil
}

const (
	ethTypeIPv4 = 0x0800
	ethTypeIPv6 = 0x86dd
	ethTypeVLAN = 0x8100
	protoTCP    = 6
	// maxSegments bounds the segments one GSO frame may become (a 64 KiB
	// frame with an MSS of 88 bytes, IPv6's minimum MTU less headers).
	maxSegments = 1024
)

// Finisher completes frames with pending offloads in software, for
// receivers that cannot take them. It owns a scratch buffer: one per
// goroutine, not safe for concurrent use.
type Finisher struct {
	buf []byte
}

// NewFinisher returns a Finisher for frames up to maxFrame bytes.
func NewFinisher(maxFrame int) *Finisher {
	return &Finisher{buf: make([]byte, maxFrame)}
}

// Finish hands fn the complete frame(s) that frame with off pending
// stands for: frame itself when nothing is pending, otherwise copies
// (frame may alias a sender's memory, which must not be written)
// with the checksum filled in and, for GSO, cut into TCP segments of at
// most GSOSize payload bytes, each with its IP length, IPv4 id and header
// checksum, TCP sequence number, flags and checksum set. It returns how
// many frames fn got, or an error (and no frames) when the headers do not
// match what off says.
func (f *Finisher) Finish(frame []byte, off Offload, fn func([]byte)) (int, error) {
	if err := off.Check(len(frame)); err != nil {
		return 0, err
	}
	if !off.Pending() {
		fn(frame)
		return 1, nil
	}
	if len(frame) > len(f.buf) {
		return 0, errFrameLarge
	}
	if off.GSOType == GSONone {
		b := f.buf[:copy(f.buf, frame)]
		putChecksum(b, int(off.CsumStart), int(off.CsumOffset))
		fn(b)
		return 1, nil
	}
	return f.segment(frame, off, fn)
}

var errFrameLarge = errors.New("offload: frame larger than the scratch buffer")

// tcpHeaders locates the IP and TCP headers of a TCP frame: the offset of
// the IP header and of the TCP header, and the total header length.
func tcpHeaders(frame []byte, gsoType uint8) (ipOff, tcpOff, hdrLen int, err error) {
	if len(frame) < ethHeaderLen {
		return 0, 0, 0, errGSOHeaders
	}
	ipOff = ethHeaderLen
	etype := binary.BigEndian.Uint16(frame[12:14])
	if etype == ethTypeVLAN {
		if len(frame) < ethHeaderLen+4 {
			return 0, 0, 0, errGSOHeaders
		}
		etype = binary.BigEndian.Uint16(frame[16:18])
		ipOff += 4
	}
	switch {
	case gsoType == GSOTCPv4 && etype == ethTypeIPv4:
		if len(frame) < ipOff+20 || frame[ipOff]>>4 != 4 || frame[ipOff+9] != protoTCP {
			return 0, 0, 0, errGSOHeaders
		}
		ihl := int(frame[ipOff]&0xf) * 4
		if ihl < 20 {
			return 0, 0, 0, errGSOHeaders
		}
		tcpOff = ipOff + ihl
	case gsoType == GSOTCPv6 && etype == ethTypeIPv6:
		// Extension headers are not followed: Linux does not send TSO
		// frames with them through virtio-net.
		if len(frame) < ipOff+40 || frame[ipOff]>>4 != 6 || frame[ipOff+6] != protoTCP {
			return 0, 0, 0, errGSOHeaders
		}
		tcpOff = ipOff + 40
	default:
		return 0, 0, 0, errGSOHeaders
	}
	if len(frame) < tcpOff+20 {
		return 0, 0, 0, errGSOHeaders
	}
	thl := int(frame[tcpOff+12]>>4) * 4
	if thl < 20 || len(frame) < tcpOff+thl {
		return 0, 0, 0, errGSOHeaders
	}
	return ipOff, tcpOff, tcpOff + thl, nil
}

// segment cuts a TCP GSO frame into segments.
func (f *Finisher) segment(frame []byte, off Offload, fn func([]byte)) (int, error) {
	// Work from a private copy: a guest may change its buffer meanwhile,
	// and every length below must come from bytes that stay put.
	frame = f.buf[:copy(f.buf, frame)]
	ipOff, tcpOff, hdrLen, err := tcpHeaders(frame, off.GSOType)
	if err != nil {
		return 0, err
	}
	payload := len(frame) - hdrLen
	mss := int(off.GSOSize)
	nseg := (payload + mss - 1) / mss
	if nseg == 0 {
		nseg = 1
	}
	if nseg > maxSegments {
		return 0, errGSOTooMany
	}
	// Segments are built in place, front to back: segment i's headers go
	// right before its payload, over the tail of segment i-1, which fn
	// has already consumed -- so keep the original headers aside.
	var hdr [ethHeaderLen + 4 + 60 + 60]byte
	if hdrLen > len(hdr) {
		return 0, errGSOHeaders
	}
	copy(hdr[:], frame[:hdrLen])
	seq := binary.BigEndian.Uint32(hdr[tcpOff+4:])
	flags := hdr[tcpOff+13]
	const fin, psh, cwr = 0x01, 0x08, 0x80
	var id uint16
	if off.GSOType == GSOTCPv4 {
		id = binary.BigEndian.Uint16(hdr[ipOff+4:])
	}
	n := 0
	for i := 0; i < nseg; i++ {
		start := hdrLen + i*mss // payload offset in frame
		end := min(start+mss, len(frame))
		base := start - hdrLen
		seg := frame[base:end]
		copy(seg, hdr[:hdrLen])
		segLen := end - base
		binary.BigEndian.PutUint32(seg[tcpOff+4:], seq+uint32(i*mss))
		fl := flags
		if i > 0 {
			fl &^= cwr
		}
		if i < nseg-1 {
			fl &^= fin | psh
		}
		seg[tcpOff+13] = fl
		ipLen := segLen - ipOff
		if off.GSOType == GSOTCPv4 {
			binary.BigEndian.PutUint16(seg[ipOff+2:], uint16(ipLen))
			binary.BigEndian.PutUint16(seg[ipOff+4:], id+uint16(i))
			seg[ipOff+10], seg[ipOff+11] = 0, 0
			binary.BigEndian.PutUint16(seg[ipOff+10:], ^fold(sum(seg[ipOff:tcpOff], 0)))
		} else {
			binary.BigEndian.PutUint16(seg[ipOff+4:], uint16(ipLen-40))
		}
		tcpLen := segLen - tcpOff
		seg[tcpOff+16], seg[tcpOff+17] = 0, 0
		var ps uint64
		if off.GSOType == GSOTCPv4 {
			ps = sum(seg[ipOff+12:ipOff+20], 0)
		} else {
			ps = sum(seg[ipOff+8:ipOff+40], 0)
		}
		ps += protoTCP + uint64(tcpLen)
		binary.BigEndian.PutUint16(seg[tcpOff+16:], ^fold(sum(seg[tcpOff:], ps)))
		fn(seg)
		n++
	}
	return n, nil
}

// putChecksum stores the checksum of b[start:] (whose field at
// start+offset holds the pseudo-header sum) at start+offset.
func putChecksum(b []byte, start, offset int) {
	c := ^fold(sum(b[start:], 0))
	if c == 0 && offset == 6 {
		// UDP: a computed 0 is sent as 0xffff (0 means "no checksum").
		c = 0xffff
	}
	binary.BigEndian.PutUint16(b[start+offset:], c)
}

// sum adds b to acc as big-endian 16-bit words (an odd last byte is the
// high half of a word), without folding.
func sum(b []byte, acc uint64) uint64 {
	for len(b) >= 8 {
		acc += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold folds a sum to 16 bits with end-around carries.
func fold(acc uint64) uint16 {
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}
