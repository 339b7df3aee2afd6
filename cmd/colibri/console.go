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
