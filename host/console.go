package host

import (
	"context"
	"io"
	"sync"
)

// DefaultConsoleBuffer is how much of a VM's console output the host
// keeps for readers (the agent's console route).
const DefaultConsoleBuffer = 256 << 10

// Console is the serial console output of a VM: the last bytes of it,
// kept in a ring, and a way to follow what comes next. Offsets count every
// byte the guest has written since the VM was created.
type Console struct {
	mu     sync.Mutex
	buf    []byte // ring of cap bytes
	size   int
	total  int64 // bytes written so far
	closed bool
	wait   chan struct{} // closed at the next write or close
	// sink also gets every byte (a console file, a prefixed terminal).
	sink io.Writer
}

func newConsole(size int, sink io.Writer) *Console {
	if size <= 0 {
		size = DefaultConsoleBuffer
	}
	return &Console{buf: make([]byte, size), sink: sink, wait: make(chan struct{})}
}

// Write appends guest output. It is the VM's console writer: called from
// the vCPU thread that drives the UART, it never blocks on readers.
func (c *Console) Write(p []byte) (int, error) {
	if c.sink != nil {
		// A sink's failure (a full disk, a closed terminal) must not stop
		// the guest's UART.
		_, _ = c.sink.Write(p)
	}
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

// close ends the console: readers waiting for output get io.EOF once they
// have read everything.
func (c *Console) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.wait)
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
