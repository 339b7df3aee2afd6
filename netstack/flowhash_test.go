package netstack

import (
	"encoding/binary"
	"testing"
)

func tcp6Frame() []byte {
	f := make([]byte, 14+4+40+20)
	copy(f[0:12], []byte{0x52, 0x54, 0, 0, 0, 1, 0x52, 0x54, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(f[12:], etherTypeVLAN)
	binary.BigEndian.PutUint16(f[16:], etherTypeIPv6)
	ip := f[18:]
	ip[0] = 0x60
	ip[6] = ipProtoTCP
	ip[23], ip[39] = 1, 2
	binary.BigEndian.PutUint16(ip[40:], 443)
	binary.BigEndian.PutUint16(ip[42:], 50000)
	return f
}

func TestFlowHashFields(t *testing.T) {
	base := tcp6Frame()
	h := flowHash(base)
	if flowHash(append([]byte(nil), base...)) != h {
		t.Fatal("hash not deterministic")
	}
	// Changing a port, an address or a MAC changes the hash; changing
	// the payload does not.
	for _, off := range []int{0, 11, 18 + 23, 18 + 39, 18 + 41, 18 + 43} {
		f := append([]byte(nil), base...)
		f[off] ^= 0x40
		if flowHash(f) == h {
			t.Errorf("flipping byte %d did not change the hash", off)
		}
	}
	f := append([]byte(nil), base...)
	f[len(f)-1] ^= 0xff
	if flowHash(f) != h {
		t.Error("payload byte changed the hash")
	}
	// IPv4 fragments hash without ports.
	v4 := make([]byte, 14+20+8)
	binary.BigEndian.PutUint16(v4[12:], etherTypeIPv4)
	v4[14], v4[14+9] = 0x45, ipProtoUDP
	binary.BigEndian.PutUint16(v4[14+6:], 0x2000) // MF
	h4 := flowHash(v4)
	v4[34] = 9
	if flowHash(v4) != h4 {
		t.Error("ports of an IPv4 fragment were hashed")
	}
}

func TestFlowHashTruncated(t *testing.T) {
	f := tcp6Frame()
	for n := range len(f) + 1 {
		_ = flowHash(f[:n])
	}
	v4 := make([]byte, 14+60+4)
	binary.BigEndian.PutUint16(v4[12:], etherTypeIPv4)
	v4[14], v4[14+9] = 0x4f, ipProtoTCP // IHL 60 bytes
	for n := range len(v4) + 1 {
		_ = flowHash(v4[:n])
	}
	v4[14] = 0x41 // IHL below minimum
	_ = flowHash(v4)
}

func FuzzFlowHash(f *testing.F) {
	f.Add(tcp6Frame())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if flowHash(b) != flowHash(append([]byte(nil), b...)) {
			t.Fatal("not deterministic")
		}
	})
}
