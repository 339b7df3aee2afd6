package netstacktest

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/vnet"
)

// Generator is a synthetic source Endpoint for benchmarks: it transmits
// one template frame as many times as Send asked, allocating nothing.
type Generator struct {
	k         kicker
	frame     []byte
	remaining atomic.Int64
}

// Frame builds an Ethernet frame of size bytes (at least 60) from src to
// dst carrying a valid IPv4 header (10.0.0.1 -> 10.0.0.2) and a UDP header
// (1234 -> 5678, no checksum), for benchmarks and tests.
func Frame(dst, src [6]byte, size int) []byte {
	size = max(size, 60)
	f := make([]byte, size)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(size-14))
	ip[8] = 64
	ip[9] = 17
	copy(ip[12:16], []byte{10, 0, 0, 1})
	copy(ip[16:20], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[20:22], 1234)
	binary.BigEndian.PutUint16(ip[22:24], 5678)
	binary.BigEndian.PutUint16(ip[24:26], uint16(size-34))
	binary.BigEndian.PutUint16(ip[10:12], ipv4Checksum(ip[:20]))
	return f
}

// ipv4Checksum is the Internet checksum of an IPv4 header whose checksum
// field is zero.
func ipv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// NewGenerator returns a Generator transmitting frame.
func NewGenerator(frame []byte) (*Generator, error) {
	g := &Generator{frame: append([]byte(nil), frame...)}
	if err := g.k.open(); err != nil {
		return nil, fmt.Errorf("netstacktest generator: %w", err)
	}
	return g, nil
}

// Send makes n more frames available and kicks if armed.
func (g *Generator) Send(n int) {
	g.remaining.Add(int64(n))
	g.k.kickIfArmed()
}

// Transmit implements netstack.Endpoint.
func (g *Generator) Transmit(max int, fn func([]byte, vnet.Offload)) int {
	r := g.remaining.Load()
	if r <= 0 {
		return 0
	}
	n := int(min(int64(max), r))
	for range n {
		fn(g.frame, vnet.Offload{})
	}
	g.remaining.Add(-int64(n))
	return n
}

// Deliver implements netstack.Endpoint; a Generator drops what it gets.
func (g *Generator) Deliver([]byte) bool { return true }

// Flush implements netstack.Endpoint.
func (g *Generator) Flush() {}

// WaitFD implements netstack.Endpoint.
func (g *Generator) WaitFD() int { return g.k.fd }

// Arm implements netstack.Endpoint.
func (g *Generator) Arm() bool {
	g.k.armed.Store(true)
	return g.remaining.Load() > 0
}

// Disarm implements netstack.Endpoint.
func (g *Generator) Disarm() { g.k.armed.Store(false) }

// Close releases the eventfd.
func (g *Generator) Close() error { return unix.Close(g.k.fd) }

// Sink is a synthetic destination Endpoint for benchmarks: it copies each
// delivered frame into a fixed ring of buffers, as a receive ring would,
// and counts frames; Delivered counts those published by Flush.
type Sink struct {
	k         kicker
	bufs      [256][2048]byte
	next      int
	unflushed uint64
	delivered atomic.Uint64
	bytes     atomic.Uint64
	lastLen   atomic.Int64
}

// NewSink returns an empty Sink.
func NewSink() (*Sink, error) {
	s := &Sink{}
	if err := s.k.open(); err != nil {
		return nil, fmt.Errorf("netstacktest sink: %w", err)
	}
	return s, nil
}

// Transmit implements netstack.Endpoint; a Sink never transmits.
func (s *Sink) Transmit(int, func([]byte, vnet.Offload)) int { return 0 }

// Deliver implements netstack.Endpoint.
func (s *Sink) Deliver(frame []byte) bool {
	n := copy(s.bufs[s.next%len(s.bufs)][:], frame)
	s.next++
	s.unflushed++
	s.bytes.Add(uint64(n))
	s.lastLen.Store(int64(len(frame)))
	return true
}

// Flush implements netstack.Endpoint.
func (s *Sink) Flush() {
	s.delivered.Add(s.unflushed)
	s.unflushed = 0
}

// WaitFD implements netstack.Endpoint.
func (s *Sink) WaitFD() int { return s.k.fd }

// Arm implements netstack.Endpoint.
func (s *Sink) Arm() bool { return false }

// Disarm implements netstack.Endpoint.
func (s *Sink) Disarm() {}

// Delivered returns how many frames have been delivered and flushed.
func (s *Sink) Delivered() uint64 { return s.delivered.Load() }

// Close releases the eventfd.
func (s *Sink) Close() error { return unix.Close(s.k.fd) }
