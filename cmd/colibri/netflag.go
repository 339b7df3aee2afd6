package main

import (
	"crypto/rand"
	"fmt"
	"net"
	"strings"
)

// netSpec is boot's --net tap=NAME[,mac=MAC].
type netSpec struct {
	tap string
	mac net.HardwareAddr
}

// parseNet parses --net tap=NAME[,mac=MAC]; a missing MAC is a random
// locally administered unicast one.
func parseNet(s string) (netSpec, error) {
	var n netSpec
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return n, fmt.Errorf("--net %q: want tap=NAME[,mac=MAC]", s)
		}
		switch k {
		case "tap":
			if len(v) >= 16 || strings.ContainsAny(v, "/ \t") {
				return n, fmt.Errorf("--net %q: %q is not an interface name (at most 15 characters, no '/' or spaces)", s, v)
			}
			n.tap = v
		case "mac":
			mac, err := net.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				return n, fmt.Errorf("--net %q: %q is not a MAC address like 52:54:00:12:34:56", s, v)
			}
			if mac[0]&1 != 0 {
				return n, fmt.Errorf("--net %q: %s is a multicast address; a NIC needs a unicast one", s, v)
			}
			n.mac = mac
		default:
			return n, fmt.Errorf("--net %q: unknown key %q (want tap=NAME[,mac=MAC])", s, k)
		}
	}
	if n.tap == "" {
		return n, fmt.Errorf("--net %q: tap=NAME is required", s)
	}
	if n.mac == nil {
		n.mac = make(net.HardwareAddr, 6)
		_, _ = rand.Read(n.mac[3:])
		copy(n.mac, []byte{0x52, 0x54, 0x00})
	}
	return n, nil
}
