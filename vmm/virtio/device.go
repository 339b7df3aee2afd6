// Package virtio is colibri's virtio 1.x device layer: the Device interface
// device models implement, and the modern virtio-pci transport that exposes
// them to the guest (common, notify, ISR and device configuration in one
// memory BAR; MSI-X vectors routed through KVM irqfds; queue kicks through
// KVM ioeventfds so they never exit to userspace).
package virtio

import "github.com/colibrivm/colibri/vmm/virtio/virtq"

// Device types (virtio 1.2, section 5).
const (
	TypeNet   = 1
	TypeBlock = 2
	TypeRNG   = 4
)

// Feature bits handled by the transport and ring layer.
const (
	FeatureIndirectDesc = 1 << 28
	FeatureEventIdx     = 1 << 29
	FeatureVersion1     = 1 << 32
)

// Device is a virtio device model.
type Device interface {
	// Type returns the virtio device id.
	Type() uint16
	// Features returns the device-specific feature bits it offers; the
	// transport adds VERSION_1, EVENT_IDX and INDIRECT_DESC.
	Features() uint64
	// QueueSizes returns the maximum size of each queue.
	QueueSizes() []uint16
	// ReadConfig and WriteConfig access the device-specific configuration.
	ReadConfig(offset uint64, data []byte)
	WriteConfig(offset uint64, data []byte)
	// Activate is called once the driver set DRIVER_OK, with the
	// negotiated features and the enabled queues (nil for a queue the
	// driver did not enable).
	Activate(features uint64, queues []*Queue) error
	// Process is called on the queue's worker goroutine when the driver
	// kicked queue q: it pops, serves and pushes chains, then calls
	// q.Signal.
	Process(q *Queue)
	// Reset stops the device; it is called with no Process running.
	Reset()
}

// SelfServer is implemented by devices that serve some of their queues
// from their own threads (netstack's pollers) instead of the transport's
// per-queue worker goroutines. For such a queue the transport still creates
// the kick eventfd and binds it to the queue's notify address (Queue.KickFD)
// but never calls Process; the device must stop touching the queue, and
// stop waiting on its KickFD, before its Reset returns.
type SelfServer interface {
	ServesQueue(index int) bool
}

// Queue is one enabled virtqueue and how to interrupt the driver for it.
type Queue struct {
	*virtq.Queue
	// Index is the queue's number.
	Index     int
	interrupt func()
	broken    func(error)
	kickFD    int
}

// KickFD returns the eventfd the driver's kicks of this queue signal
// (through a KVM ioeventfd), or -1 when there is none. It stays open until
// the device is reset.
func (q *Queue) KickFD() int { return q.kickFD }

// Interrupt raises the queue's interrupt unconditionally.
func (q *Queue) Interrupt() { q.interrupt() }

// Signal raises the queue's interrupt if the driver asked for one since the
// last Signal, and reports whether it did.
func (q *Queue) Signal() bool {
	if q.NeedsInterrupt() {
		q.interrupt()
		return true
	}
	return false
}

// Fail reports a malformed ring: the device marks itself DEVICE_NEEDS_RESET.
func (q *Queue) Fail(err error) { q.broken(err) }

// NewQueue wraps a ring for a device model outside the PCI transport (a
// test driver or a poller): interrupt raises the queue's interrupt and
// broken reports a malformed ring.
func NewQueue(q *virtq.Queue, index int, interrupt func(), broken func(error)) *Queue {
	return &Queue{Queue: q, Index: index, interrupt: interrupt, broken: broken, kickFD: -1}
}

// WithKickFD sets the eventfd KickFD returns, for a queue made with
// NewQueue whose driver kicks through an eventfd (a synthetic driver).
func (q *Queue) WithKickFD(fd int) *Queue {
	q.kickFD = fd
	return q
}

// Drain serves every chain the driver has made available: each is popped
// into c, handed to serve (which returns the bytes it wrote into the
// chain's writable buffers) and pushed back. It keeps kicks armed, so a
// chain added while it drains is not missed, and ends with Signal. A
// malformed ring stops it and marks the device as needing a reset.
func (q *Queue) Drain(c *virtq.Chain, serve func(*virtq.Chain) uint32) {
	q.DrainWhile(c, func(c *virtq.Chain) (uint32, bool) { return serve(c), true })
}

// DrainWhile is Drain with a serve that may refuse a chain: a chain it
// returns false for goes back to the ring unanswered (Unpop), the chains
// answered before it are signalled, and DrainWhile returns false.
func (q *Queue) DrainWhile(c *virtq.Chain, serve func(*virtq.Chain) (n uint32, ok bool)) bool {
	for {
		ok, err := q.Pop(c)
		if err != nil {
			q.Fail(err)
			return true
		}
		if !ok {
			q.RearmNotification()
			if q.Pending() == 0 {
				break
			}
			continue
		}
		n, ok := serve(c)
		if !ok {
			q.Unpop(1)
			q.Signal()
			return false
		}
		q.Push(c.Head, n)
	}
	q.Signal()
	return true
}
