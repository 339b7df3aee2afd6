package netstack

import "encoding/binary"

// Ethernet types the flow hash understands.
const (
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86DD
	etherTypeVLAN  = 0x8100
	etherTypeQinQ  = 0x88A8
	ethHeaderLen   = 14
	ipProtoTCP     = 6
	ipProtoUDP     = 17
	hashMultiplier = 0x9E3779B97F4A7C15
)

func mix(h, v uint64) uint64 {
	h ^= v
	h *= hashMultiplier
	return h ^ h>>32
}

// flowHash hashes the flow a frame belongs to: both MACs, and when present
// the IPv4 or IPv6 addresses and TCP or UDP ports (after at most one VLAN
// tag). Every field is bounds-checked: a short or malformed frame hashes
// on whatever prefix is valid. Frames of one flow always hash alike, so
// they keep their order on a multi-queue port.
func flowHash(f []byte) uint32 {
	if len(f) < ethHeaderLen {
		return 0
	}
	h := mix(0, binary.BigEndian.Uint64(f[0:8]))
	h = mix(h, uint64(binary.BigEndian.Uint32(f[8:12])))
	et := binary.BigEndian.Uint16(f[12:14])
	off := ethHeaderLen
	if et == etherTypeVLAN || et == etherTypeQinQ {
		if len(f) < off+4 {
			return uint32(h)
		}
		et = binary.BigEndian.Uint16(f[off+2 : off+4])
		off += 4
	}
	switch et {
	case etherTypeIPv4:
		if len(f) < off+20 {
			break
		}
		ip := f[off:]
		ihl := int(ip[0]&0x0f) * 4
		if ihl < 20 || len(ip) < ihl {
			break
		}
		h = mix(h, binary.BigEndian.Uint64(ip[12:20]))
		proto := ip[9]
		fragment := binary.BigEndian.Uint16(ip[6:8]) & 0x3fff // MF or offset
		if fragment == 0 && (proto == ipProtoTCP || proto == ipProtoUDP) && len(ip) >= ihl+4 {
			h = mix(h, uint64(binary.BigEndian.Uint32(ip[ihl:ihl+4]))|uint64(proto)<<32)
		}
	case etherTypeIPv6:
		if len(f) < off+40 {
			break
		}
		ip := f[off:]
		for i := 8; i < 40; i += 8 {
			h = mix(h, binary.BigEndian.Uint64(ip[i:i+8]))
		}
		proto := ip[6]
		if (proto == ipProtoTCP || proto == ipProtoUDP) && len(ip) >= 44 {
			h = mix(h, uint64(binary.BigEndian.Uint32(ip[40:44]))|uint64(proto)<<32)
		}
	}
	return uint32(h ^ h>>29)
}
