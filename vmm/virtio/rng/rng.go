// Package rng is virtio-rng: it fills the driver's buffers from the host's
// getrandom(2).
package rng

import (
	"crypto/rand"

	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
)

// RNG is a virtio entropy device.
type RNG struct {
	chain virtq.Chain
}

// New returns a virtio-rng device.
func New() *RNG { return &RNG{} }

// Type implements virtio.Device.
func (*RNG) Type() uint16 { return virtio.TypeRNG }

// Features implements virtio.Device.
func (*RNG) Features() uint64 { return 0 }

// QueueSizes implements virtio.Device.
func (*RNG) QueueSizes() []uint16 { return []uint16{64} }

// ReadConfig implements virtio.Device (no configuration).
func (*RNG) ReadConfig(_ uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

// WriteConfig implements virtio.Device.
func (*RNG) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (*RNG) Activate(uint64, []*virtio.Queue) error { return nil }

// Reset implements virtio.Device.
func (*RNG) Reset() {}

// Process implements virtio.Device: it fills every available buffer.
func (r *RNG) Process(q *virtio.Queue) { q.Drain(&r.chain, fill) }

// fill writes random bytes into the chain's writable buffers.
func fill(c *virtq.Chain) uint32 {
	var n uint32
	for _, s := range c.Writable() {
		rand.Read(s.Buf)
		n += uint32(len(s.Buf))
	}
	return n
}
