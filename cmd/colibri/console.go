package main

import (
	"bytes"
	"io"
	"sync"
)

// lockedWriter serialises writes from several consoles to one stream.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter writes whole lines, each starting with prefix, to w: the
// consoles of several guests share a terminal without mixing their lines.
// Carriage returns are dropped; a partial line waits for its end (or
// Flush).
type prefixWriter struct {
	prefix []byte
	w      io.Writer
	mu     sync.Mutex
	line   []byte
}

func newPrefixWriter(w io.Writer, prefix string) *prefixWriter {
	return &prefixWriter{prefix: []byte(prefix), w: w}
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.appendLine(b)
			break
		}
		p.appendLine(b[:i+1])
		b = b[i+1:]
		if err := p.emit(); err != nil {
			return n, err
		}
	}
	// A guest that never ends its line still gets seen.
	if len(p.line) > 4096 {
		p.line = append(p.line, '\n')
		return n, p.emit()
	}
	return n, nil
}

func (p *prefixWriter) appendLine(b []byte) {
	for _, c := range b {
		if c != '\r' {
			p.line = append(p.line, c)
		}
	}
}

func (p *prefixWriter) emit() error {
	out := make([]byte, 0, len(p.prefix)+len(p.line))
	out = append(append(out, p.prefix...), p.line...)
	p.line = p.line[:0]
	_, err := p.w.Write(out)
	return err
}

// Flush writes a pending partial line.
func (p *prefixWriter) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.line) == 0 {
		return nil
	}
	p.line = append(p.line, '\n')
	return p.emit()
}

// escapeReader passes terminal input to the guest and quits on Ctrl-A x;
// Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A and any other byte sends both.
// A Ctrl-A at the end of one read waits for the next byte; bytes that do
// not fit the caller's buffer wait for the next Read.
type escapeReader struct {
	r       io.Reader
	quit    func()
	pending bool
	buf     []byte
	carry   []byte
}

func (e *escapeReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(e.carry) > 0 {
		n := copy(p, e.carry)
		e.carry = e.carry[n:]
		return n, nil
	}
	if cap(e.buf) < len(p) {
		e.buf = make([]byte, len(p))
	}
	in := e.buf[:len(p)]
	n, err := e.r.Read(in)
	// One input byte becomes at most two output bytes (a held Ctrl-A and
	// the byte after it).
	out := make([]byte, 0, n+1)
	for _, b := range in[:n] {
		if e.pending {
			e.pending = false
			switch b {
			case 'x', 'X':
				e.quit()
				k := copy(p, out)
				e.carry = append(e.carry[:0], out[k:]...)
				return k, io.EOF
			case 0x01:
				out = append(out, 0x01)
			default:
				out = append(out, 0x01, b)
			}
			continue
		}
		if b == 0x01 {
			e.pending = true
			continue
		}
		out = append(out, b)
	}
	k := copy(p, out)
	e.carry = append(e.carry[:0], out[k:]...)
	return k, err
}
