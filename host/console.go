package host

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// DefaultConsoleBuffer is how much of a VM's console output the host
// keeps for readers (the agent's console route).
const DefaultConsoleBuffer = 256 << 10

// Console is the serial console output of a VM: the last bytes of it,
// kept in a ring, and a way to follow what comes next. Offsets count every
// byte the guest has written since the VM was created.
//
// A console's sink (a console file, a prefixed terminal) is fed by a
// goroutine of its own that follows the ring, so a sink that blocks (a
// full pipe, a stopped terminal) never blocks the guest's vCPU and costs
// no other guest anything. A sink that falls more than the ring behind
// loses the bytes that left the ring; the sink is told how many, and
// Lost counts them.
type Console struct {
	mu     sync.Mutex
	buf    []byte // ring of cap bytes
	size   int
	total  int64 // bytes written so far
	closed bool
	wait   chan struct{} // closed at the next write or close

	sink     io.Writer
	taken    int64         // bytes the sink's goroutine has read or lost
	sunk     int64         // bytes handed to the sink or lost
	lost     int64         // bytes that left the ring before the sink's goroutine read them
	sunkWait chan struct{} // closed when sunk next moves
	sinkDone chan struct{} // closed when the sink's goroutine has ended
}

// sinkChunk is the most the sink's goroutine hands the sink at once.
const sinkChunk = 32 << 10

func newConsole(size int, sink io.Writer) *Console {
	if size <= 0 {
		size = DefaultConsoleBuffer
	}
	c := &Console{buf: make([]byte, size), wait: make(chan struct{}),
		sink: sink, sunkWait: make(chan struct{}), sinkDone: make(chan struct{})}
	if sink == nil {
		close(c.sinkDone)
	} else {
		go c.feedSink()
	}
	return c
}

// Write appends guest output. It is the VM's console writer: called from
// the vCPU thread that drives the UART, it never blocks on readers or on
// the sink.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.buf)
	// Only the last n bytes of p can stay; they go where they belong in
	// the stream.
	keep, skip := p, 0
	if len(keep) > n {
		skip = len(keep) - n
		keep = keep[skip:]
	}
	at := int((c.total + int64(skip)) % int64(n))
	k := copy(c.buf[at:], keep)
	copy(c.buf, keep[k:])
	c.total += int64(len(p))
	c.size = min(c.size+len(p), n)
	close(c.wait)
	c.wait = make(chan struct{})
	return len(p), nil
}

// feedSink follows the ring into the sink until the console closes and
// the sink has had everything.
func (c *Console) feedSink() {
	defer close(c.sinkDone)
	buf := make([]byte, sinkChunk)
	var off int64
	for {
		n, at, err := c.Follow(context.Background(), buf, off)
		c.mu.Lock()
		c.lost += at - off
		c.taken = at + int64(n)
		c.mu.Unlock()
		if at > off {
			// A sink's failure (a full disk, a closed terminal) must not
			// stop the guest's UART, nor this goroutine.
			_, _ = fmt.Fprintf(c.sink, "\n[colibri: %d bytes of console output lost: this output fell behind the guest]\n", at-off)
		}
		if n > 0 {
			_, _ = c.sink.Write(buf[:n])
		}
		c.mu.Lock()
		c.sunk = at + int64(n)
		close(c.sunkWait)
		c.sunkWait = make(chan struct{})
		c.mu.Unlock()
		off = at + int64(n)
		if err != nil { // io.EOF: closed and all read
			return
		}
	}
}

// Sync waits until the sink has had every byte written before the call
// (or lost it), or for ctx to end. A console without a sink is always in
// sync.
func (c *Console) Sync(ctx context.Context) error {
	c.mu.Lock()
	target := c.total
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sunk, wait := c.sunk, c.sunkWait
		c.mu.Unlock()
		if sunk >= target {
			return nil
		}
		select {
		case <-wait:
		case <-c.sinkDone:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("console output to its destination: %w", ctx.Err())
		}
	}
}

// Lost returns how many bytes of output the sink never got, or will
// never get, because it fell more than the ring behind.
func (c *Console) Lost() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	gone := c.total - int64(c.size) // bytes no longer in the ring
	if c.sink == nil || gone <= c.taken {
		return c.lost
	}
	return c.lost + gone - c.taken
}

// close ends the console: readers waiting for output get io.EOF once they
// have read everything, and the sink's goroutine ends once it has handed
// the sink the rest. close waits up to linger for that, so that a console
// file is complete before it is closed, but not for a sink that blocks.
func (c *Console) close(linger time.Duration) {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.wait)
	}
	c.mu.Unlock()
	t := time.NewTimer(linger)
	defer t.Stop()
	select {
	case <-c.sinkDone:
	case <-t.C:
	}
}

// Written returns how many bytes the guest has written in all.
func (c *Console) Written() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// ReadAt copies output from offset off into p and returns how many bytes
// it copied and the offset of the first one: later than off when the
// bytes at off have left the ring. It does not wait.
func (c *Console) ReadAt(p []byte, off int64) (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readLocked(p, off)
}

func (c *Console) readLocked(p []byte, off int64) (int, int64) {
	oldest := c.total - int64(c.size)
	if off < oldest {
		off = oldest
	}
	if off >= c.total {
		return 0, c.total
	}
	avail := int(c.total - off)
	if len(p) > avail {
		p = p[:avail]
	}
	n := len(c.buf)
	at := int(off % int64(n))
	k := copy(p, c.buf[at:])
	if k < len(p) {
		k += copy(p[k:], c.buf)
	}
	return k, off
}

// Follow reads like ReadAt but, when there is nothing new at off, waits
// for output, for the console to close (io.EOF) or for ctx to end.
func (c *Console) Follow(ctx context.Context, p []byte, off int64) (int, int64, error) {
	for {
		c.mu.Lock()
		n, at := c.readLocked(p, off)
		closed, wait := c.closed, c.wait
		c.mu.Unlock()
		if n > 0 {
			return n, at, nil
		}
		if closed {
			return 0, at, io.EOF
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return 0, at, ctx.Err()
		}
	}
}
