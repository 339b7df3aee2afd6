package exp

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// progress prints one progress line: rewritten in place (\r) on a
// terminal, a plain line per step otherwise.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	total  int
	n      int
	label  string
	start  time.Time
	width  int
	dirty  bool
	phaseT time.Time
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, start: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

// phase starts phase label of repeat rep.
func (p *progress) phase(rep int, label string) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	p.n++
	p.label = fmt.Sprintf("repeat %d · %s", rep, label)
	p.phaseT = time.Now()
	p.mu.Unlock()
}

// step shows what the current phase is doing.
func (p *progress) step(what string) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	el := time.Since(p.start).Round(time.Second)
	var line string
	if p.n == 0 {
		line = fmt.Sprintf("exp: %s (%v)", what, el)
	} else {
		eta := ""
		if p.n > 1 {
			per := time.Since(p.start) / time.Duration(p.n-1)
			eta = fmt.Sprintf(", ~%v left", (per * time.Duration(p.total-p.n+1)).Round(time.Second))
		}
		line = fmt.Sprintf("exp: [%d/%d] %s: %s (%v elapsed%s)", p.n, p.total, p.label, what, el, eta)
	}
	if p.tty {
		pad := ""
		if n := p.width - len(line); n > 0 {
			pad = strings.Repeat(" ", n)
		}
		fmt.Fprintf(p.w, "\r%s%s", line, pad)
		p.width = len(line)
		p.dirty = true
		return
	}
	fmt.Fprintln(p.w, line)
}

// done ends the line on a terminal.
func (p *progress) done() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.dirty {
		fmt.Fprintln(p.w)
		p.dirty = false
	}
}
