package netstack

import (
	"time"

	"github.com/colibrivm/colibri/internal/vnet"
)

// Limits of a destination's hold queue: the frames switched to a guest
// whose receive ring is momentarily out of buffers wait there (TCP would
// otherwise lose them, and its window with them) instead of being
// dropped, up to holdFrames frames or holdBytes bytes per endpoint, for
// at most holdFor.
const (
	holdFrames = 256
	holdBytes  = 512 << 10
	holdFor    = 100 * time.Millisecond
)

// holdQueue is a FIFO of copied frames with the offloads still pending in
// them, in one buffer allocated the first time it is needed (most
// endpoints never need one). It is guarded by its slot's lock.
type holdQueue struct {
	buf   []byte
	ents  []heldFrame
	first int // ents[first:] are queued
	end   int // buf[:end] is in use (from ents[first].start)
}

type heldFrame struct {
	start, n int
	off      vnet.Offload
	at       int64 // the switch's clock when it was held
}

// len returns how many frames are queued.
func (q *holdQueue) len() int { return len(q.ents) - q.first }

// push queues a copy of frame, held since at; false when the queue is
// full.
func (q *holdQueue) push(frame []byte, off vnet.Offload, at int64) bool {
	if q.len() >= holdFrames || len(frame) > holdBytes {
		return false
	}
	if q.buf == nil {
		q.buf = make([]byte, holdBytes)
		q.ents = make([]heldFrame, 0, holdFrames)
	}
	if q.end+len(frame) > len(q.buf) || len(q.ents) == cap(q.ents) {
		q.compact()
		if q.end+len(frame) > len(q.buf) {
			return false
		}
	}
	copy(q.buf[q.end:], frame)
	q.ents = append(q.ents, heldFrame{start: q.end, n: len(frame), off: off, at: at})
	q.end += len(frame)
	return true
}

// compact moves the queued frames to the front of the buffer.
func (q *holdQueue) compact() {
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

// peek returns the oldest queued frame (aliasing the queue's buffer),
// its offloads and when it was held. The queue must not be empty.
func (q *holdQueue) peek() ([]byte, vnet.Offload, int64) {
	e := &q.ents[q.first]
	return q.buf[e.start : e.start+e.n], e.off, e.at
}

// pop drops the oldest queued frame.
func (q *holdQueue) pop() {
	q.first++
	if q.first == len(q.ents) {
		q.ents, q.first, q.end = q.ents[:0], 0, 0
	}
}
