// Package netstacktest provides in-memory netstack endpoints and a
// throughput harness, for netstack's own tests and benchmarks and for
// anyone measuring another Endpoint (a virtio-net queue pair) through
// the switch the same way.
package netstacktest

import (
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/vnet"
)

// kicker is an eventfd written when frames arrive while armed, the way a
// guest kicks a virtqueue only when notifications are enabled.
type kicker struct {
	fd    int
	armed atomic.Bool
	kicks atomic.Uint64
}

func (k *kicker) open() error {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	k.fd = fd
	return nil
}

func (k *kicker) kickIfArmed() {
	if k.armed.Load() {
		k.kicks.Add(1)
		one := [8]byte{1}
		_, _ = unix.Write(k.fd, one[:])
	}
}

// Queue is an in-memory Endpoint for tests: frames given to Inject are
// transmitted in order; delivered frames are copied and become visible
// through Take after Flush. It records any misuse the Endpoint contract
// forbids (concurrent Deliver or Flush, any call after Close). It is an
// OffloadEndpoint that takes pending offloads once SetAcceptOffload(true).
type Queue struct {
	k kicker

	mu       sync.Mutex
	tx       []OffloadFrame
	pending  []OffloadFrame
	rx       []OffloadFrame
	rxCap    int
	offloads atomic.Bool

	inRx       atomic.Int32
	closed     atomic.Bool
	violations atomic.Uint64
	flushes    atomic.Uint64
	delivered  atomic.Uint64
}

// NewQueue returns a Queue whose receive side holds up to rxCap frames
// not yet taken by Take (0: unlimited).
func NewQueue(rxCap int) (*Queue, error) {
	q := &Queue{rxCap: rxCap}
	if err := q.k.open(); err != nil {
		return nil, fmt.Errorf("netstacktest queue: %w", err)
	}
	return q, nil
}

// OffloadFrame is a frame with the offloads pending in it.
type OffloadFrame struct {
	Data []byte
	Off  vnet.Offload
}

// Inject queues complete frames for transmission (copied) and kicks the
// endpoint's eventfd if it is armed.
func (q *Queue) Inject(frames ...[]byte) {
	q.mu.Lock()
	for _, f := range frames {
		q.tx = append(q.tx, OffloadFrame{Data: append([]byte(nil), f...)})
	}
	q.mu.Unlock()
	q.k.kickIfArmed()
}

// InjectOffload queues one frame with off pending, as a guest with
// checksum and TSO offloads would send it.
func (q *Queue) InjectOffload(frame []byte, off vnet.Offload) {
	q.mu.Lock()
	q.tx = append(q.tx, OffloadFrame{Data: append([]byte(nil), frame...), Off: off})
	q.mu.Unlock()
	q.k.kickIfArmed()
}

// Transmit implements netstack.Endpoint.
func (q *Queue) Transmit(max int, fn func([]byte, vnet.Offload)) int {
	q.check()
	q.mu.Lock()
	n := min(max, len(q.tx))
	batch := q.tx[:n]
	q.tx = q.tx[n:]
	q.mu.Unlock()
	for _, f := range batch {
		fn(f.Data, f.Off)
	}
	return n
}

// Deliver implements netstack.Endpoint.
func (q *Queue) Deliver(frame []byte) bool { return q.deliver(frame, vnet.Offload{}) }

// deliver queues a copy of frame with off pending for the next Flush.
func (q *Queue) deliver(frame []byte, off vnet.Offload) bool {
	q.check()
	if !q.inRx.CompareAndSwap(0, 1) {
		q.violations.Add(1)
		return false
	}
	defer q.inRx.Store(0)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.rxCap > 0 && len(q.pending)+len(q.rx) >= q.rxCap {
		return false
	}
	q.pending = append(q.pending, OffloadFrame{Data: append([]byte(nil), frame...), Off: off})
	q.delivered.Add(1)
	return true
}

// SetAcceptOffload sets whether the queue takes frames with offloads
// pending (like a guest that negotiated them) or wants them complete.
func (q *Queue) SetAcceptOffload(on bool) { q.offloads.Store(on) }

// AcceptsOffload implements netstack.OffloadEndpoint.
func (q *Queue) AcceptsOffload(vnet.Offload) bool { return q.offloads.Load() }

// DeliverOffload implements netstack.OffloadEndpoint.
func (q *Queue) DeliverOffload(frame []byte, off vnet.Offload) bool {
	if !q.offloads.Load() {
		q.violations.Add(1)
		return false
	}
	return q.deliver(frame, off)
}

// Flush implements netstack.Endpoint.
func (q *Queue) Flush() {
	q.check()
	if !q.inRx.CompareAndSwap(0, 1) {
		q.violations.Add(1)
		return
	}
	defer q.inRx.Store(0)
	q.flushes.Add(1)
	q.mu.Lock()
	q.rx = append(q.rx, q.pending...)
	q.pending = q.pending[:0]
	q.mu.Unlock()
}

// WaitFD implements netstack.Endpoint.
func (q *Queue) WaitFD() int { return q.k.fd }

// Arm implements netstack.Endpoint.
func (q *Queue) Arm() bool {
	q.check()
	q.k.armed.Store(true)
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.tx) > 0
}

// Disarm implements netstack.Endpoint.
func (q *Queue) Disarm() {
	q.check()
	q.k.armed.Store(false)
}

func (q *Queue) check() {
	if q.closed.Load() {
		q.violations.Add(1)
	}
}

// Take returns and removes the flushed received frames.
func (q *Queue) Take() [][]byte {
	var out [][]byte
	for _, f := range q.TakeFrames() {
		out = append(out, f.Data)
	}
	return out
}

// TakeFrames is Take with each frame's pending offloads.
func (q *Queue) TakeFrames() []OffloadFrame {
	q.mu.Lock()
	defer q.mu.Unlock()
	rx := q.rx
	q.rx = nil
	return rx
}

// Delivered returns how many frames Deliver accepted.
func (q *Queue) Delivered() uint64 { return q.delivered.Load() }

// Pending returns how many injected frames are not yet transmitted.
func (q *Queue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.tx)
}

// Flushes returns how many times Flush was called.
func (q *Queue) Flushes() uint64 { return q.flushes.Load() }

// Kicks returns how many times the eventfd was written.
func (q *Queue) Kicks() uint64 { return q.k.kicks.Load() }

// Violations returns how many contract violations were seen: concurrent
// Deliver/Flush, or calls after Close.
func (q *Queue) Violations() uint64 { return q.violations.Load() }

// Close closes the eventfd; any later method call counts as a violation.
func (q *Queue) Close() error {
	q.closed.Store(true)
	if err := unix.Close(q.k.fd); err != nil {
		return fmt.Errorf("netstacktest queue: close eventfd: %w", err)
	}
	return nil
}

// WaitingQueue is a Queue that is a netstack.RxWaiter: a frame that finds
// its receive side full (rxCap frames not yet taken) is refused for want
// of room, so the switch holds it; Take makes room and, while ArmRx is in
// effect, signals RxWaitFD as a guest's driver kicks its receive queue
// after reposting buffers.
type WaitingQueue struct {
	*Queue
	rxk    kicker
	full   atomic.Bool
	arms   atomic.Uint64
	disarm atomic.Uint64
}

// NewWaitingQueue returns a WaitingQueue whose receive side holds rxCap
// frames (at least 1) until they are taken.
func NewWaitingQueue(rxCap int) (*WaitingQueue, error) {
	q, err := NewQueue(max(rxCap, 1))
	if err != nil {
		return nil, err
	}
	w := &WaitingQueue{Queue: q}
	if err := w.rxk.open(); err != nil {
		q.Close()
		return nil, fmt.Errorf("netstacktest waiting queue: %w", err)
	}
	return w, nil
}

// Deliver implements netstack.Endpoint.
func (w *WaitingQueue) Deliver(frame []byte) bool {
	return w.DeliverOffload(frame, vnet.Offload{})
}

// DeliverOffload implements netstack.OffloadEndpoint.
func (w *WaitingQueue) DeliverOffload(frame []byte, off vnet.Offload) bool {
	if off.Pending() && !w.offloads.Load() {
		w.violations.Add(1)
		return false
	}
	w.mu.Lock()
	full := len(w.pending)+len(w.rx) >= w.rxCap
	w.mu.Unlock()
	w.full.Store(full)
	if full {
		return false
	}
	return w.deliver(frame, off)
}

// RxFull implements netstack.RxWaiter.
func (w *WaitingQueue) RxFull() bool { return w.full.Load() }

// RxWaitFD implements netstack.RxWaiter.
func (w *WaitingQueue) RxWaitFD() int { return w.rxk.fd }

// ArmRx implements netstack.RxWaiter: it reports whether there is room.
func (w *WaitingQueue) ArmRx() bool {
	w.check()
	w.arms.Add(1)
	w.rxk.armed.Store(true)
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)+len(w.rx) < w.rxCap
}

// DisarmRx implements netstack.RxWaiter.
func (w *WaitingQueue) DisarmRx() {
	w.check()
	w.disarm.Add(1)
	w.rxk.armed.Store(false)
}

// Take returns and removes the flushed received frames, and signals
// RxWaitFD if ArmRx asked for it.
func (w *WaitingQueue) Take() [][]byte {
	out := w.Queue.Take()
	if len(out) > 0 {
		w.rxk.kickIfArmed()
	}
	return out
}

// RxArms returns how many times ArmRx was called, RxKicks how many times
// Take signalled RxWaitFD.
func (w *WaitingQueue) RxArms() uint64 { return w.arms.Load() }

// RxKicks returns how many times Take signalled RxWaitFD.
func (w *WaitingQueue) RxKicks() uint64 { return w.rxk.kicks.Load() }

// Close closes both eventfds; any later method call counts as a
// violation.
func (w *WaitingQueue) Close() error {
	err := w.Queue.Close()
	if e := unix.Close(w.rxk.fd); e != nil && err == nil {
		err = fmt.Errorf("netstacktest waiting queue: close eventfd: %w", e)
	}
	return err
}
