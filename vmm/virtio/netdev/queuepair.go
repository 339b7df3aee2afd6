package netdev

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/vnet"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
)

// QueuePair is one receiveq/transmitq pair as a poller sees it. Its
// methods follow netstack.OffloadEndpoint: Transmit, Arm and Disarm are
// called by the one poller that owns the pair; Deliver, DeliverOffload and
// Flush by any poller, one at a time. Nothing on these paths allocates.
type QueuePair struct {
	dev       *Net
	index     int
	rx, tx    *virtio.Queue
	mergeable bool
	offloads  offloads

	txChain virtq.Chain
	rxChain virtq.Chain
	// scratch gathers a frame the driver split over several buffers.
	scratch []byte
	// rxPopped counts receive chains popped since the last Flush.
	rxPopped int
	// rxFull is true when the last delivery that failed found too few
	// receive buffers, and rxFullAt is the driver's available index it
	// saw then.
	rxFull   bool
	rxFullAt uint16
	// rxArmed is true while the guest's receive kicks are enabled
	// (ArmRx).
	rxArmed bool
	// txArmed is true while the guest's transmit kicks are enabled.
	txArmed bool
}

func newQueuePair(dev *Net, index int, rx, tx *virtio.Queue, mergeable bool, off offloads) *QueuePair {
	p := &QueuePair{dev: dev, index: index, rx: rx, tx: tx, mergeable: mergeable, offloads: off, txArmed: true,
		scratch: make([]byte, MaxFrame)}
	// The device waits for receive buffers only when a frame found none
	// (ArmRx); otherwise the driver's receive kicks would be wasted exits.
	rx.SetNotification(false)
	return p
}

// Index returns the pair's number (0 for receiveq1/transmitq1).
func (p *QueuePair) Index() int { return p.index }

// String names the pair for logs.
func (p *QueuePair) String() string {
	return fmt.Sprintf("virtio-net %s pair %d", FormatMAC(p.dev.cfg.MAC), p.index)
}

// Errors from ParseTx.
var (
	errNoHeader   = errors.New("transmit chain shorter than the virtio-net header")
	errWritable   = errors.New("transmit chain with a device-writable buffer")
	errRunt       = errors.New("frame shorter than an Ethernet header")
	errFrameLarge = errors.New("frame larger than the device's maximum")
)

// ParseTx returns the Ethernet frame of transmit chain c, the bytes after
// the virtio-net header, and the offloads the header asks for: only those
// the driver negotiated (csum: checksum offload, tso: TCP segmentation),
// checked against the frame. The frame is gathered into scratch (at least
// MaxFrame bytes), also when it lies in one buffer, so what the switch
// checks is what it delivers; the header is copied before it is read,
// once.
func ParseTx(c *virtq.Chain, scratch []byte, csum, tso bool) ([]byte, vnet.Offload, error) {
	frame, hdr, err := splitTx(c, scratch)
	if err != nil {
		return nil, vnet.Offload{}, err
	}
	off, err := vnet.ParseHeader(hdr[:], csum, tso)
	if err == nil {
		err = off.Check(len(frame))
	}
	if err != nil {
		return nil, vnet.Offload{}, err
	}
	return frame, off, nil
}

// splitTx separates a transmit chain's header (copied) from its frame.
func splitTx(c *virtq.Chain, scratch []byte) ([]byte, [HeaderLen]byte, error) {
	var hdr [HeaderLen]byte
	if c.WriteLen > 0 {
		return nil, hdr, errWritable
	}
	if c.ReadLen < HeaderLen {
		return nil, hdr, errNoHeader
	}
	size := c.ReadLen - HeaderLen
	if size < MinFrame {
		return nil, hdr, errRunt
	}
	if size > MaxFrame || int(size) > len(scratch) {
		return nil, hdr, errFrameLarge
	}
	gather(hdr[:], c.Segs)
	// Skip the header, which may itself span buffers.
	skip := uint32(HeaderLen)
	segs := c.Segs
	for len(segs) > 0 && uint32(len(segs[0].Buf)) <= skip {
		skip -= uint32(len(segs[0].Buf))
		segs = segs[1:]
	}
	// Always the device's own copy, even of a frame in one buffer: the
	// switch checks the source address and then delivers the frame, and
	// a frame left in guest memory could be rewritten in between (by the
	// guest's other vCPU while the poller works) past the port's binding.
	n := copy(scratch, segs[0].Buf[skip:])
	for _, s := range segs[1:] {
		n += copy(scratch[n:], s.Buf)
	}
	return scratch[:n], hdr, nil
}

// Transmit hands up to max frames the guest sent to fn and returns the
// chains to the guest (CompleteTx then interrupts it for them). A
// malformed chain is dropped and counted; a broken ring stops the pair
// and asks the driver for a reset.
func (p *QueuePair) Transmit(max int, fn func(frame []byte, off vnet.Offload)) int {
	q := p.tx
	if q.Broken() != nil {
		return 0
	}
	sent := 0
	// At most a ring's worth of chains per call, counting malformed ones:
	// a driver offering heads again before they come back cannot keep the
	// poller here.
	for popped := 0; sent < max && popped < int(q.Size()); popped++ {
		ok, err := q.Pop(&p.txChain)
		if err != nil {
			q.Fail(fmt.Errorf("%s transmit queue: %w", p, err))
			break
		}
		if !ok {
			break
		}
		frame, off, err := ParseTx(&p.txChain, p.scratch, p.offloads.txCsum, p.offloads.txTSO)
		if err != nil {
			p.dev.Stats.TxMalformed.Add(1)
		} else {
			fn(frame, off)
			sent++
		}
		q.Fill(p.txChain.Head, 0)
	}
	// The whole batch goes back with one used-index store.
	q.Publish()
	if !p.txArmed {
		// Keep avail_event out of the driver's way as the ring moves.
		q.SetNotification(false)
	}
	return sent
}

// CompleteTx implements netstack.TxCompleter: it interrupts the guest for
// the transmit chains Transmit returned, if its used_event asks for it.
// The poller calls it after each Transmit, once it has delivered the
// batch.
func (p *QueuePair) CompleteTx() {
	if p.tx.Signal() {
		p.dev.Stats.TxInterrupts.Add(1)
	}
}

// Deliver copies a complete frame into the guest's receive buffers: with
// mergeable buffers as many as it needs, otherwise one that holds it all.
// It returns false when the guest has not posted enough buffers.
func (p *QueuePair) Deliver(frame []byte) bool { return p.DeliverOffload(frame, vnet.Offload{}) }

// AcceptsOffload implements netstack.OffloadEndpoint: whether the driver
// negotiated what off leaves pending.
func (p *QueuePair) AcceptsOffload(off vnet.Offload) bool { return p.offloads.accepts(off) }

// DeliverOffload is Deliver for a frame with off pending, which the
// receive header then describes. The caller has checked AcceptsOffload.
func (p *QueuePair) DeliverOffload(frame []byte, off vnet.Offload) bool {
	q := p.rx
	p.rxFull = false
	if q.Broken() != nil || len(frame) > MaxFrame {
		return false
	}
	need := len(frame) + HeaderLen
	var hdr []byte // where num_buffers goes
	var heads [64]struct {
		head uint16
		n    uint32
	}
	used := 0
	src := frame
	first := true
	for need > 0 {
		if used == len(heads) {
			q.Unpop(uint16(used))
			p.dev.Stats.RxTooBig.Add(1)
			return false
		}
		ok, err := q.Pop(&p.rxChain)
		if err != nil {
			q.Fail(fmt.Errorf("%s receive queue: %w", p, err))
			return false
		}
		if !ok {
			q.Unpop(uint16(used))
			p.rxFull, p.rxFullAt = true, q.AvailIdx()
			return false
		}
		c := &p.rxChain
		if c.ReadLen > 0 || c.WriteLen == 0 || (!p.mergeable && int(c.WriteLen) < need) || (first && c.WriteLen < HeaderLen) {
			// A buffer this frame cannot use: without mergeable buffers
			// the driver's buffers are all alike, so the frame is too big.
			q.Unpop(uint16(used + 1))
			p.dev.Stats.RxTooBig.Add(1)
			return false
		}
		var wrote uint32
		for _, s := range c.Segs {
			b := s.Buf
			if first {
				// The header starts the first buffer, which holds it whole.
				if len(b) < HeaderLen {
					q.Unpop(uint16(used + 1))
					p.dev.Stats.RxTooBig.Add(1)
					return false
				}
				vnet.PutHeader(b[:HeaderLen], off)
				hdr = b[:HeaderLen]
				b = b[HeaderLen:]
				wrote += HeaderLen
				first = false
			}
			k := copy(b, src)
			src = src[k:]
			wrote += uint32(k)
			if len(src) == 0 {
				break
			}
		}
		heads[used].head, heads[used].n = c.Head, wrote
		used++
		need -= int(wrote)
	}
	binary.LittleEndian.PutUint16(hdr[10:], uint16(used))
	// The frame's buffers reach the driver at Flush, with those of the
	// frames before it, in one used-index update: it never sees fewer
	// than num_buffers of them.
	for i := 0; i < used; i++ {
		q.Fill(heads[i].head, heads[i].n)
	}
	p.rxPopped += used
	return true
}

// Flush publishes the frames delivered since the last Flush (one
// used-index store) and interrupts the guest if its used_event asks for
// it.
func (p *QueuePair) Flush() {
	if p.rxPopped == 0 {
		return
	}
	p.rxPopped = 0
	p.rx.Publish()
	if !p.rxArmed {
		p.rx.SetNotification(false)
	}
	if p.rx.Signal() {
		p.dev.Stats.RxInterrupts.Add(1)
	}
}

// RxFull implements netstack.RxWaiter: whether the last Deliver or
// DeliverOffload that failed did so only because the guest had posted too
// few receive buffers (not for a broken ring or a frame no buffers could
// hold).
func (p *QueuePair) RxFull() bool { return p.rxFull }

// RxWaitFD implements netstack.RxWaiter: the receive queue's kick
// eventfd, or -1.
func (p *QueuePair) RxWaitFD() int { return p.rx.KickFD() }

// ArmRx implements netstack.RxWaiter: it asks the guest to kick the
// receive queue when it posts buffers beyond those it had when a frame
// last found too few, and reports whether it has posted some since.
func (p *QueuePair) ArmRx() bool {
	p.rxArmed = true
	p.rx.SetNotificationAt(p.rxFullAt)
	return p.rx.AvailIdx() != p.rxFullAt
}

// DisarmRx implements netstack.RxWaiter: receive kicks off again.
func (p *QueuePair) DisarmRx() {
	p.rxArmed = false
	p.rx.SetNotification(false)
}

// WaitFD is the transmit queue's kick eventfd.
func (p *QueuePair) WaitFD() int { return p.tx.KickFD() }

// Arm re-enables the guest's transmit kicks and reports whether frames
// arrived before the guest could see that.
func (p *QueuePair) Arm() bool {
	p.txArmed = true
	p.tx.SetNotification(true)
	return p.tx.Pending() > 0 && p.tx.Broken() == nil
}

// Disarm suppresses the guest's transmit kicks while a poller polls.
func (p *QueuePair) Disarm() {
	p.txArmed = false
	p.tx.SetNotification(false)
}

// CountKicks implements netstack.KickCounter: it adds the kicks the
// transmit eventfd has counted since it was last read (a non-blocking read
// takes and clears the count) to Stats.
func (p *QueuePair) CountKicks() {
	fd := p.tx.KickFD()
	if fd < 0 {
		return
	}
	var b [8]byte
	if n, err := unix.Read(fd, b[:]); err == nil && n == len(b) {
		p.dev.Stats.Kicks.Add(binary.NativeEndian.Uint64(b[:]))
	}
}
