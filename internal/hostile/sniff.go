//go:build linux && amd64

package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// sniff is the bystander's side: it counts the frames any interface
// receives whose source MAC is none of allowed (the switch's guests) —
// frames the switch let through with a forged source — until SIGTERM or
// SIGINT, then prints
//
//	hostile: sniffed N frames, M with a foreign source MAC (first: MAC), K of ethertype 0x88b5
//
// (0x88b5 is what tx-toctou sends: K shows its frames arrived.)
func sniff(allowed string) error {
	ok := map[[6]byte]bool{}
	for _, s := range strings.Split(allowed, ",") {
		hw, err := net.ParseMAC(strings.TrimSpace(s))
		if err != nil || len(hw) != 6 {
			return fmt.Errorf("-sniff: %q is not a MAC address", s)
		}
		ok[[6]byte(hw)] = true
	}
	const ethPAll = 0x0003
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(ethPAll)))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	// A receive timeout lets the loop see the stop flag.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}); err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var total, foreign, probes int
	var stopping atomic.Bool
	first := ""
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for !stopping.Load() {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // EAGAIN on the timeout, EINTR
			}
			if ll, isLL := from.(*unix.SockaddrLinklayer); isLL && ll.Pkttype == unix.PACKET_OUTGOING {
				continue // this guest's own frames
			}
			if n < 14 {
				continue
			}
			total++
			if buf[12] == 0x88 && buf[13] == 0xb5 {
				probes++
			}
			src := [6]byte(buf[6:12])
			if !ok[src] {
				foreign++
				if first == "" {
					first = net.HardwareAddr(src[:]).String()
				}
			}
		}
	}()
	fmt.Println("hostile: sniffing")
	<-stop
	stopping.Store(true)
	<-done
	unix.Close(fd)
	if first == "" {
		first = "none"
	}
	fmt.Printf("hostile: sniffed %d frames, %d with a foreign source MAC (first: %s), %d of ethertype 0x88b5\n", total, foreign, first, probes)
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
