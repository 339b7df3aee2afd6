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

// Process implements virtio.Device.
func (r *RNG) Process(q *virtio.Queue) {
	for {
		ok, err := q.Pop(&r.chain)
		if err != nil {
			q.Fail(err)
			return
		}
		if !ok {
			q.RearmNotification()
			if q.Pending() == 0 {
				break
			}
			continue
		}
		var n uint32
		for _, s := range r.chain.Writable() {
			rand.Read(s.Buf)
			n += uint32(len(s.Buf))
		}
		q.Push(r.chain.Head, n)
	}
	q.Signal()
}
