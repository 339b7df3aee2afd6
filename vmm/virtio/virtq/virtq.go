// Package virtq is the device side of a virtio split virtqueue (virtio 1.2,
// section 2.7), built to be driven from a polling thread: popping a chain
// fills a caller-owned Chain without allocating, and every value the guest
// wrote — descriptor indices, addresses, lengths, chain lengths (in
// descriptors and in bytes), indirect tables, ring indices — is checked
// before use. A queue that sees a
// malformed ring stops and reports it (the transport then sets
// DEVICE_NEEDS_RESET); it never panics or touches memory outside the guest.
package virtq

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/colibrivm/colibri/vmm/memory"
)

// Descriptor flags.
const (
	descNext     = 1
	descWrite    = 2
	descIndirect = 4
)

// Ring flags.
const (
	availNoInterrupt = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT
	usedNoNotify     = 1 // VIRTQ_USED_F_NO_NOTIFY
)

// MaxSize is the largest queue size colibri offers.
const MaxSize = 1024

// maxIndirect bounds an indirect table (in descriptors).
const maxIndirect = 1024

// maxChainBytes bounds a chain's total length: virtio 1.2, 2.7.5 forbids
// drivers chains longer than 2^32 bytes, and Chain counts in 32 bits, so
// the device takes at most 2^32 - 1 (a longer chain would wrap ReadLen or
// WriteLen to a small, plausible total).
const maxChainBytes = 1<<32 - 1

// ErrBroken wraps every error about a malformed ring.
var ErrBroken = errors.New("virtqueue broken by the driver")

// Seg is one buffer of a descriptor chain, aliasing guest memory.
type Seg struct {
	Buf []byte
	// Write marks a device-writable buffer.
	Write bool
}

// Chain is one popped descriptor chain: readable segments first, then
// writable ones. Reuse a Chain across Pop calls to avoid allocation.
type Chain struct {
	Head uint16
	Segs []Seg
	// ReadLen and WriteLen total the readable and writable bytes.
	ReadLen, WriteLen uint32
}

// Readable returns the device-readable segments.
func (c *Chain) Readable() []Seg {
	for i, s := range c.Segs {
		if s.Write {
			return c.Segs[:i]
		}
	}
	return c.Segs
}

// Writable returns the device-writable segments.
func (c *Chain) Writable() []Seg {
	for i, s := range c.Segs {
		if s.Write {
			return c.Segs[i:]
		}
	}
	return nil
}

// Queue is the device side of one split virtqueue. It is not safe for
// concurrent use: one goroutine (the device's worker or a poller) drives it.
type Queue struct {
	mem      *memory.Memory
	size     uint16
	eventIdx bool
	desc     []byte // size * 16
	avail    []byte // flags, idx, ring[size], used_event
	used     []byte // flags, idx, ring[size]*8, avail_event

	lastAvail uint16
	// usedIdx is the used index published to the driver; filled counts
	// the entries written after it that Publish has not published yet.
	usedIdx uint16
	filled  uint16
	// signalled is the used index at the last interrupt decision.
	signalled uint16
	broken    error
	notifyOn  bool
	// farFrom is lastAvail when avail_event was last moved away from the
	// driver (notifications off with EVENT_IDX), farOK whether that value
	// still stands: SetNotification(false) rewrites it only once the ring
	// has moved far enough for it to matter.
	farFrom uint16
	farOK   bool
}

// farSlack is how far lastAvail may move past farFrom before avail_event,
// written as farFrom-1-size, must be written again. The driver kicks only
// when its index crosses avail_event; its index lies within size of
// lastAvail, so the written value stays out of its way until lastAvail
// has moved by 65536-2*size (63,488 for the largest queue): half of 65536
// is well inside that.
const farSlack = 1 << 15

// Config is what the driver programmed for a queue.
type Config struct {
	Size                          uint16
	DescAddr, AvailAddr, UsedAddr uint64
	// EventIdx is true when VIRTIO_RING_F_EVENT_IDX was negotiated.
	EventIdx bool
}

// New checks cfg against guest memory and returns the queue.
func New(mem *memory.Memory, cfg Config) (*Queue, error) {
	if cfg.Size == 0 || cfg.Size > MaxSize || cfg.Size&(cfg.Size-1) != 0 {
		return nil, fmt.Errorf("%w: queue size %d is not a power of two in 1..%d", ErrBroken, cfg.Size, MaxSize)
	}
	if cfg.DescAddr%16 != 0 || cfg.AvailAddr%2 != 0 || cfg.UsedAddr%4 != 0 {
		return nil, fmt.Errorf("%w: misaligned rings (desc %#x, avail %#x, used %#x)", ErrBroken, cfg.DescAddr, cfg.AvailAddr, cfg.UsedAddr)
	}
	n := uint64(cfg.Size)
	q := &Queue{mem: mem, size: cfg.Size, eventIdx: cfg.EventIdx, notifyOn: true}
	var err error
	if q.desc, err = mem.Slice(cfg.DescAddr, 16*n); err != nil {
		return nil, fmt.Errorf("%w: descriptor table: %v", ErrBroken, err)
	}
	if q.avail, err = mem.Slice(cfg.AvailAddr, 6+2*n); err != nil {
		return nil, fmt.Errorf("%w: available ring: %v", ErrBroken, err)
	}
	if q.used, err = mem.Slice(cfg.UsedAddr, 6+8*n); err != nil {
		return nil, fmt.Errorf("%w: used ring: %v", ErrBroken, err)
	}
	// The device owns the used ring's header and avail_event: a fresh
	// queue starts at 0 (virtio 1.2, 2.7.6 and 2.7.10), whatever the driver
	// left there. Resuming at a guest-written used.idx would let the
	// driver choose where the device starts.
	memory.StoreUint16(q.used[0:], 0)
	memory.StoreUint16(q.used[2:], 0)
	if q.eventIdx {
		memory.StoreUint16(q.used[4+8*n:], 0)
	}
	return q, nil
}

// Size returns the queue size.
func (q *Queue) Size() uint16 { return q.size }

// Broken returns the error that stopped the queue, if any.
func (q *Queue) Broken() error { return q.broken }

func (q *Queue) fail(format string, args ...any) error {
	q.broken = fmt.Errorf("%w: "+format, append([]any{ErrBroken}, args...)...)
	return q.broken
}

// availIdx loads the driver's available index.
func (q *Queue) availIdx() uint16 { return memory.LoadUint16(q.avail[2:]) }

// AvailIdx returns the driver's available index: every chain it has made
// available, popped or not.
func (q *Queue) AvailIdx() uint16 { return q.availIdx() }

// Pending returns how many chains the driver has made available that the
// device has not popped yet.
func (q *Queue) Pending() uint16 { return q.availIdx() - q.lastAvail }

// Pop takes the next available chain into c. It returns false when the ring
// is empty, and an error (also kept in Broken) when the ring is malformed.
func (q *Queue) Pop(c *Chain) (bool, error) {
	if q.broken != nil {
		return false, q.broken
	}
	avail := q.availIdx()
	pending := avail - q.lastAvail
	if pending == 0 {
		return false, nil
	}
	if pending > q.size {
		return false, q.fail("available index jumped by %d on a queue of %d", pending, q.size)
	}
	slot := 4 + 2*uint32(q.lastAvail%q.size)
	head := binary.LittleEndian.Uint16(q.avail[slot:])
	if err := q.walk(head, c); err != nil {
		return false, err
	}
	q.lastAvail++
	return true, nil
}

// walk fills c with the chain starting at head.
func (q *Queue) walk(head uint16, c *Chain) error {
	c.Head = head
	c.Segs = c.Segs[:0]
	c.ReadLen, c.WriteLen = 0, 0
	if head >= q.size {
		return q.fail("chain head %d outside a queue of %d", head, q.size)
	}
	table, count := q.desc, uint32(q.size)
	idx := uint32(head)
	indirect := false
	var total uint64
	for steps := uint32(0); ; steps++ {
		if steps >= count {
			return q.fail("descriptor chain from %d longer than its table (a loop?)", head)
		}
		d := table[16*idx : 16*idx+16]
		addr := binary.LittleEndian.Uint64(d[0:])
		length := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])
		if flags&descIndirect != 0 {
			if indirect {
				return q.fail("nested indirect descriptor in chain %d", head)
			}
			if flags&descNext != 0 || len(c.Segs) > 0 {
				return q.fail("indirect descriptor chained with others in chain %d", head)
			}
			if length == 0 || length%16 != 0 || length/16 > maxIndirect {
				return q.fail("indirect table of %d bytes in chain %d", length, head)
			}
			t, err := q.mem.Slice(addr, uint64(length))
			if err != nil {
				return q.fail("indirect table of chain %d: %v", head, err)
			}
			table, count, idx, indirect, steps = t, length/16, 0, true, ^uint32(0)
			continue
		}
		buf, err := q.mem.Slice(addr, uint64(length))
		if err != nil {
			return q.fail("buffer of chain %d: %v", head, err)
		}
		if total += uint64(length); total > maxChainBytes {
			return q.fail("chain %d is longer than 4 GiB", head)
		}
		write := flags&descWrite != 0
		if write {
			c.WriteLen += length
		} else {
			if c.WriteLen > 0 {
				return q.fail("readable buffer after a writable one in chain %d", head)
			}
			c.ReadLen += length
		}
		c.Segs = append(c.Segs, Seg{Buf: buf, Write: write})
		if flags&descNext == 0 {
			return nil
		}
		if uint32(next) >= count {
			return q.fail("next descriptor %d outside a table of %d in chain %d", next, count, head)
		}
		idx = uint32(next)
	}
}

// Push returns chain head to the driver with written bytes of device
// output, and publishes the new used index (with any entries Fill wrote
// before it).
func (q *Queue) Push(head uint16, written uint32) {
	q.Fill(head, written)
	q.Publish()
}

// Fill writes a used entry returning chain head with written bytes after
// the entries already filled, without publishing it: the driver sees it
// only at the next Publish. A device that returns several chains for one
// item (the buffers of one mergeable receive frame) fills them all and
// publishes them with one used-index store, so the driver never sees part
// of the item. Every filled chain must have been popped, so at most Size
// entries are ever outstanding.
func (q *Queue) Fill(head uint16, written uint32) {
	if q.filled >= q.size {
		// Only a driver that offered chains it had not got back (heads
		// used twice) gets here: publish rather than overwrite entries.
		q.Publish()
	}
	slot := 4 + 8*uint32((q.usedIdx+q.filled)%q.size)
	binary.LittleEndian.PutUint32(q.used[slot:], uint32(head))
	binary.LittleEndian.PutUint32(q.used[slot+4:], written)
	q.filled++
}

// Publish makes the filled entries visible to the driver: one ordered
// store of the used index, after the entries' stores, with no fence (the
// one a used_event check needs is NeedsInterrupt's).
func (q *Queue) Publish() {
	if q.filled == 0 {
		return
	}
	q.usedIdx += q.filled
	q.filled = 0
	memory.StoreUint16Ordered(q.used[2:], q.usedIdx)
}

// NeedsInterrupt reports whether the driver wants an interrupt for the
// chains pushed since the last call, following used_event with EVENT_IDX
// or VIRTQ_AVAIL_F_NO_INTERRUPT without. When there are some, it fences
// first: the driver re-enables interrupts by writing used_event (or the
// flag) and then reading the used index, so the device must make its used
// index visible before it reads theirs, or both could miss the other.
func (q *Queue) NeedsInterrupt() bool {
	old, cur := q.signalled, q.usedIdx
	q.signalled = cur
	if old == cur {
		return false
	}
	memory.Fence()
	if !q.eventIdx {
		return binary.LittleEndian.Uint16(q.avail[0:])&availNoInterrupt == 0
	}
	event := memory.LoadUint16(q.avail[4+2*uint32(q.size):])
	// vring_need_event: interrupt if event lies in [old, cur).
	return cur-event-1 < cur-old
}

// SetNotification asks the driver to kick (true) or not to (false) when it
// makes buffers available. With EVENT_IDX the device writes avail_event;
// without, VIRTQ_USED_F_NO_NOTIFY. After re-enabling, the caller must check
// Pending again: the driver may have added buffers before seeing the change
// (enabling fences, so that check sees them).
//
// Disabling is cheap enough for every poll: it writes nothing while
// notifications are off already and what it wrote last still keeps the
// driver from kicking (with EVENT_IDX, until the ring has moved by
// farSlack), and it never fences: a kick the driver sends meanwhile is
// only a wasted exit.
func (q *Queue) SetNotification(enable bool) {
	if !enable {
		if !q.notifyOn && (!q.eventIdx || (q.farOK && q.lastAvail-q.farFrom < farSlack)) {
			return
		}
		q.notifyOn = false
		if q.eventIdx {
			// Far from any index the driver will reach soon.
			q.farFrom, q.farOK = q.lastAvail, true
			memory.StoreUint16Ordered(q.used[4+8*uint32(q.size):], q.lastAvail-1-q.size)
			return
		}
		memory.StoreUint16Ordered(q.used[0:], binary.LittleEndian.Uint16(q.used[0:])|usedNoNotify)
		return
	}
	q.notifyOn = true
	q.farOK = false
	if q.eventIdx {
		memory.StoreUint16(q.used[4+8*uint32(q.size):], q.lastAvail)
		return
	}
	memory.StoreUint16(q.used[0:], binary.LittleEndian.Uint16(q.used[0:])&^usedNoNotify)
}

// SetNotificationAt asks the driver to kick when it makes buffers
// available past index idx (with EVENT_IDX, avail_event = idx; without, as
// SetNotification(true)) and fences. A device waiting for more buffers
// than the driver has offered passes the available index it last saw
// (AvailIdx), then checks AvailIdx again: a kick comes only for buffers
// added after that check.
func (q *Queue) SetNotificationAt(idx uint16) {
	if !q.eventIdx {
		q.SetNotification(true)
		return
	}
	q.notifyOn = true
	q.farOK = false
	memory.StoreUint16(q.used[4+8*uint32(q.size):], idx)
}

// RearmNotification keeps kicks enabled at the current position: with
// EVENT_IDX, avail_event must follow every pop for the next kick to come.
func (q *Queue) RearmNotification() {
	if q.notifyOn && q.eventIdx {
		memory.StoreUint16(q.used[4+8*uint32(q.size):], q.lastAvail)
	}
}

// Unpop gives back the last n popped chains, which have not been pushed:
// the next Pop returns them again. A device that needs several chains for
// one item (mergeable receive buffers) uses it when the ring runs dry
// half-way.
func (q *Queue) Unpop(n uint16) {
	q.lastAvail -= n
}
