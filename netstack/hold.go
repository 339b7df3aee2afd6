package netstack

import (
	"time"

	"github.com/colibrivm/colibri/internal/vnet"
)

// Limits of a destination's hold queue: the frames switched to a guest
// whose receive ring is momentarily out of buffers wait there (TCP would
// otherwise lose them, and its window with them) instead of being
// dropped, up to holdFrames frames or holdBytes bytes per endpoint, for
// at most holdFor. A guest's ring of 256 mergeable buffers takes only 6
// to 16 TSO frames of 64 KiB, and a TCP sender bursts up to its window
// (Linux's default send buffer is at most 4 MiB): 4 MiB holds 64 more (a
// TAP's queue, which vhost-net drains, takes 1,000 frames of any size).
const (
	holdFrames = 2048
	holdBytes  = 4 << 20
	holdFor    = 500 * time.Millisecond
)

// frameQueue is a FIFO of copied frames with the offloads still pending
// in them, in one buffer allocated the first time it is needed (most
// endpoints never need one). It is guarded by its slot's lock.
type frameQueue struct {
	maxFrames, maxBytes int
	buf                 []byte
	ents                []queuedFrame
	first               int // ents[first:] are queued
	end                 int // buf[:end] is in use (from ents[first].start)
}

type queuedFrame struct {
	start, n int
	off      vnet.Offload
	at       int64 // the switch's clock when it was held
}

// len returns how many frames are queued.
func (q *frameQueue) len() int { return len(q.ents) - q.first }

// push queues a copy of frame, held since at; false when the queue is
// full.
func (q *frameQueue) push(frame []byte, off vnet.Offload, at int64) bool {
	if q.len() >= q.maxFrames || len(frame) > q.maxBytes {
		return false
	}
	if q.buf == nil {
		q.buf = make([]byte, q.maxBytes)
		q.ents = make([]queuedFrame, 0, q.maxFrames)
	}
	if q.end+len(frame) > len(q.buf) || len(q.ents) == cap(q.ents) {
		q.compact()
		if q.end+len(frame) > len(q.buf) {
			return false
		}
	}
	copy(q.buf[q.end:], frame)
	q.ents = append(q.ents, queuedFrame{start: q.end, n: len(frame), off: off, at: at})
	q.end += len(frame)
	return true
}

// compact moves the queued frames to the front of the buffer.
func (q *frameQueue) compact() {
	if q.first == 0 {
		return
	}
	base := 0
	if q.len() > 0 {
		base = q.ents[q.first].start
	}
	copy(q.buf, q.buf[base:q.end])
	q.end -= base
	n := copy(q.ents, q.ents[q.first:])
	for i := range n {
		q.ents[i].start -= base
	}
	q.ents = q.ents[:n]
	q.first = 0
}

// peek returns the oldest queued frame (aliasing the queue's buffer) and
// its entry. The queue must not be empty.
func (q *frameQueue) peek() ([]byte, *queuedFrame) {
	e := &q.ents[q.first]
	return q.buf[e.start : e.start+e.n], e
}

// pop drops the oldest queued frame.
func (q *frameQueue) pop() {
	q.first++
	if q.first == len(q.ents) {
		q.ents, q.first, q.end = q.ents[:0], 0, 0
	}
}
