package vnet

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// refChecksum is the RFC 1071 checksum, written the plain way, to check
// the fast one against.
func refChecksum(b []byte, initial uint32) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// tcpFrame builds an Ethernet frame with a TCP segment carrying payload,
// over IPv4 or IPv6, with the TCP checksum field holding the
// pseudo-header sum (as a sender with checksum offload leaves it).
func tcpFrame(v6 bool, payload []byte, seq uint32, flags byte) []byte {
	eth := []byte{0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00}
	tcp := make([]byte, 20+12) // with 12 bytes of options (timestamps)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 77)
	tcp[12] = byte(len(tcp)/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 502)
	copy(tcp[20:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	l4len := len(tcp) + len(payload)
	var ip, pseudo []byte
	if v6 {
		eth[12], eth[13] = 0x86, 0xdd
		ip = make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(l4len))
		ip[6], ip[7] = protoTCP, 64
		ip[8], ip[23] = 0xfd, 1
		ip[24], ip[39] = 0xfd, 2
		pseudo = append(append([]byte{}, ip[8:40]...), 0, 0, byte(l4len>>8), byte(l4len), 0, 0, 0, protoTCP)
	} else {
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+l4len))
		binary.BigEndian.PutUint16(ip[4:], 0x1234)
		ip[6] = 0x40 // DF
		ip[8], ip[9] = 64, protoTCP
		copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
		binary.BigEndian.PutUint16(ip[10:], refChecksum(ip, 0))
		pseudo = append(append([]byte{}, ip[12:20]...), 0, protoTCP, byte(l4len>>8), byte(l4len))
	}
	// The pseudo-header sum, not complemented, as CHECKSUM_PARTIAL leaves it.
	binary.BigEndian.PutUint16(tcp[16:], ^refChecksum(pseudo, 0))
	f := append(append(append(eth, ip...), tcp...), payload...)
	return f
}

// checkSegment verifies a complete TCP frame's checksums and returns its
// sequence number, flags and payload.
func checkSegment(t *testing.T, f []byte, v6 bool) (uint32, byte, []byte) {
	t.Helper()
	ipOff := ethHeaderLen
	var tcpOff int
	var pseudo []byte
	if v6 {
		tcpOff = ipOff + 40
		if got, want := int(binary.BigEndian.Uint16(f[ipOff+4:])), len(f)-tcpOff; got != want {
			t.Fatalf("IPv6 payload length %d, want %d", got, want)
		}
		l := len(f) - tcpOff
		pseudo = append(append([]byte{}, f[ipOff+8:ipOff+40]...), 0, 0, byte(l>>8), byte(l), 0, 0, 0, protoTCP)
	} else {
		tcpOff = ipOff + 20
		if got, want := int(binary.BigEndian.Uint16(f[ipOff+2:])), len(f)-ipOff; got != want {
			t.Fatalf("IPv4 total length %d, want %d", got, want)
		}
		if c := refChecksum(f[ipOff:tcpOff], 0); c != 0 {
			t.Fatalf("IPv4 header checksum does not verify (%#x)", c)
		}
		l := len(f) - tcpOff
		pseudo = append(append([]byte{}, f[ipOff+12:ipOff+20]...), 0, protoTCP, byte(l>>8), byte(l))
	}
	var ps uint32
	for i := 0; i < len(pseudo); i += 2 {
		ps += uint32(pseudo[i])<<8 | uint32(pseudo[i+1])
	}
	if c := refChecksum(f[tcpOff:], ps); c != 0 {
		t.Fatalf("TCP checksum does not verify (%#x)", c)
	}
	thl := int(f[tcpOff+12]>>4) * 4
	return binary.BigEndian.Uint32(f[tcpOff+4:]), f[tcpOff+13], f[tcpOff+thl:]
}

func TestFinishSegmentsTCP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, size := range []int{1, 1448, 1449, 10000, 65000 - 100} {
			payload := make([]byte, size)
			for i := range payload {
				payload[i] = byte(i*7 + i>>8)
			}
			const fin, psh, ack, cwr = 0x01, 0x08, 0x10, 0x80
			frame := tcpFrame(v6, payload, 1000, ack|psh|fin|cwr)
			typ := uint8(GSOTCPv4)
			hdrs := ethHeaderLen + 20 + 32
			if v6 {
				typ, hdrs = GSOTCPv6, ethHeaderLen+40+32
			}
			off := Offload{NeedsCsum: true, CsumStart: uint16(hdrs - 32), CsumOffset: 16, GSOType: typ, GSOSize: 1448}
			orig := append([]byte(nil), frame...)
			f := NewFinisher(65536)
			var got []byte
			var segs int
			n, err := f.Finish(frame, off, func(seg []byte) {
				if len(seg) > hdrs+1448 {
					t.Fatalf("v6=%v size=%d: segment of %d bytes, want at most %d", v6, size, len(seg), hdrs+1448)
				}
				seq, fl, pl := checkSegment(t, seg, v6)
				if want := uint32(1000 + len(got)); seq != want {
					t.Fatalf("v6=%v size=%d: segment %d seq %d, want %d", v6, size, segs, seq, want)
				}
				last := len(got)+len(pl) == size
				if (fl&fin != 0) != last || (fl&psh != 0) != last || (fl&cwr != 0) != (segs == 0) || fl&ack == 0 {
					t.Fatalf("v6=%v size=%d: segment %d flags %#x", v6, size, segs, fl)
				}
				got = append(got, pl...)
				segs++
			})
			if err != nil {
				t.Fatalf("v6=%v size=%d: %v", v6, size, err)
			}
			if want := (size + 1447) / 1448; n != want || segs != want {
				t.Fatalf("v6=%v size=%d: %d segments (fn saw %d), want %d", v6, size, n, segs, want)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("v6=%v size=%d: payload changed by segmentation", v6, size)
			}
			if !bytes.Equal(frame, orig) {
				t.Fatalf("v6=%v size=%d: Finish wrote into the sender's frame", v6, size)
			}
		}
	}
}

func TestFinishChecksumOnly(t *testing.T) {
	for _, size := range []int{0, 1, 2, 3, 1000, 1001} {
		payload := bytes.Repeat([]byte{0xab, 0xcd, 0xef}, size)[:size]
		frame := tcpFrame(false, payload, 5, 0x18)
		off := Offload{NeedsCsum: true, CsumStart: ethHeaderLen + 20, CsumOffset: 16}
		calls := 0
		n, err := NewFinisher(65536).Finish(frame, off, func(seg []byte) {
			calls++
			checkSegment(t, seg, false)
		})
		if err != nil || n != 1 || calls != 1 {
			t.Fatalf("size %d: n=%d calls=%d err=%v", size, n, calls, err)
		}
	}
}

func TestFinishCompleteFramePassesThrough(t *testing.T) {
	frame := []byte("0123456789abcdef-a complete frame")
	var got []byte
	n, err := NewFinisher(64).Finish(frame, Offload{}, func(b []byte) { got = b })
	if err != nil || n != 1 || &got[0] != &frame[0] {
		t.Fatalf("a frame without offloads must be handed over as it is: n=%d err=%v", n, err)
	}
}

func TestFinishRejectsBadOffloads(t *testing.T) {
	tcp4 := tcpFrame(false, make([]byte, 3000), 1, 0x10)
	udp := append([]byte(nil), tcp4...)
	udp[ethHeaderLen+9] = 17
	for _, tc := range []struct {
		name    string
		frame   []byte
		off     Offload
		scratch int // 0: 64 KiB
	}{
		{"checksum beyond the frame", tcp4, Offload{NeedsCsum: true, CsumStart: uint16(len(tcp4) - 1), CsumOffset: 0}, 0},
		{"unknown GSO type", tcp4, Offload{GSOType: 3, GSOSize: 1000}, 0},
		{"GSO size 0", tcp4, Offload{GSOType: GSOTCPv4}, 0},
		{"TCPv6 GSO on an IPv4 frame", tcp4, Offload{GSOType: GSOTCPv6, GSOSize: 1000}, 0},
		{"TCP GSO on UDP", udp, Offload{GSOType: GSOTCPv4, GSOSize: 1000}, 0},
		{"GSO on a runt", tcp4[:30], Offload{GSOType: GSOTCPv4, GSOSize: 1000}, 0},
		{"too many segments", tcp4, Offload{GSOType: GSOTCPv4, GSOSize: 1}, 0},
		{"larger than the scratch", make([]byte, 200), Offload{NeedsCsum: true, CsumStart: 14}, 100},
	} {
		if tc.scratch == 0 {
			tc.scratch = 65536
		}
		n, err := NewFinisher(tc.scratch).Finish(tc.frame, tc.off, func([]byte) { t.Fatalf("%s: fn called", tc.name) })
		if err == nil || n != 0 {
			t.Errorf("%s: n=%d err=%v, want an error", tc.name, n, err)
		}
	}
}

func TestSumMatchesReference(t *testing.T) {
	b := make([]byte, 301)
	for i := range b {
		b[i] = byte(i*31 + 7)
	}
	for n := 0; n <= len(b); n++ {
		if got, want := ^fold(sum(b[:n], 0)), refChecksum(b[:n], 0); got != want {
			t.Fatalf("%d bytes: checksum %#x, want %#x", n, got, want)
		}
	}
}

// FuzzFinish: any frame with any offload request either fails or yields
// frames no larger than the input plus headers, and never panics.
func FuzzFinish(f *testing.F) {
	f.Add(tcpFrame(false, make([]byte, 3000), 1, 0x18), true, uint16(34), uint16(16), uint8(GSOTCPv4), uint16(1448))
	f.Add(tcpFrame(true, make([]byte, 3000), 1, 0x18), true, uint16(54), uint16(16), uint8(GSOTCPv6), uint16(1000))
	f.Add(tcpFrame(false, make([]byte, 10), 1, 0x18), true, uint16(34), uint16(16), uint8(GSONone), uint16(0))
	f.Add([]byte{0x45}, false, uint16(0), uint16(0), uint8(GSOTCPv4), uint16(1))
	f.Fuzz(func(t *testing.T, frame []byte, csum bool, start, offset uint16, typ uint8, size uint16) {
		off := Offload{NeedsCsum: csum, CsumStart: start, CsumOffset: offset, GSOType: typ, GSOSize: size}
		fin := NewFinisher(65536)
		total := 0
		n, err := fin.Finish(frame, off, func(seg []byte) {
			total++
			if len(seg) > len(frame) {
				t.Fatalf("segment of %d bytes from a %d-byte frame", len(seg), len(frame))
			}
		})
		if err == nil && n != total {
			t.Fatalf("Finish returned %d, fn called %d times", n, total)
		}
		if err != nil && n != 0 {
			t.Fatalf("Finish failed (%v) after %d frames", err, n)
		}
	})
}

func TestHeaderRoundTrip(t *testing.T) {
	want := Offload{NeedsCsum: true, CsumStart: 34, CsumOffset: 16, GSOType: GSOTCPv6, GSOSize: 1440, HdrLen: 86}
	h := make([]byte, HeaderLen)
	h[10] = 7 // num_buffers, left alone
	PutHeader(h, want)
	got, err := ParseHeader(h, true, true)
	if err != nil || got != want || h[10] != 7 {
		t.Fatalf("round trip: got %+v, %v (num_buffers %d), want %+v", got, err, h[10], want)
	}
	if got, err := ParseHeader(h, false, false); err != nil || got.Pending() {
		t.Fatalf("without negotiated offloads the header must be ignored: %+v, %v", got, err)
	}
	if _, err := ParseHeader(h, true, false); err == nil {
		t.Fatal("GSO without negotiated TSO must be refused")
	}
	h[1] = GSOTCPv4 | gsoECN
	if _, err := ParseHeader(h, true, true); err == nil {
		t.Fatal("GSO with ECN (not negotiated) must be refused")
	}
	h[1] = 3 // UDP fragmentation offload
	if _, err := ParseHeader(h, true, true); err == nil {
		t.Fatal("UFO must be refused")
	}
}
