package exp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/colibrivm/colibri/host"
)

// The guest side of the runner: colibri's init runs the command line's
// colibri.run, which the runner writes as a small loop (agentScript) that
// reads "ID COMMAND" lines from the serial console, evaluates COMMAND and
// prints "colibri-exp: ID status N". Commands print their results as
// "colibri-exp: ID WORD ..." lines; a background command ends with
// "colibri-exp: ID end". Everything a guest prints is untrusted: lines
// are cut at maxLine bytes, a command keeps at most maxLines of them.
const (
	marker   = "colibri-exp: "
	maxLine  = 4096
	maxLines = 2000
)

// agentScript returns the colibri.run value for a guest whose NICs get
// addrs (one per NIC, "" for none): the kernel command line holds it
// between double quotes, so it contains none.
func agentScript(addrs []string) string {
	var b strings.Builder
	b.WriteString("ip link set lo up; ")
	for i, a := range addrs {
		if a != "" {
			fmt.Fprintf(&b, "ip link set eth%d up; ip addr add %s/24 dev eth%d; ", i, a, i)
		}
	}
	// No echo of the commands; no pathname expansion of the words eval
	// joins.
	b.WriteString("stty -echo; set -f; echo " + marker + "ready; " +
		"while read -r id cmd; do eval $cmd; echo " + marker + "$id status $?; done")
	return b.String()
}

// guest drives one VM's command loop over its console.
type guest struct {
	name string
	vm   *host.VM
	in   *io.PipeWriter // the guest's serial input

	mu      sync.Mutex
	ready   chan struct{}
	isReady bool
	seq     int
	pending map[string]*pending
	tail    []string // the last console lines, for errors
	inMu    sync.Mutex
}

// pending collects one command's lines until its last one.
type pending struct {
	end    string // the word that ends it: status or end
	lines  []string
	status int
	done   chan struct{}
}

func newGuest(name string, vm *host.VM, in *io.PipeWriter) *guest {
	return &guest{name: name, vm: vm, in: in, ready: make(chan struct{}), pending: map[string]*pending{}}
}

// follow reads the console until ctx ends or the console closes.
func (g *guest) follow(ctx context.Context) {
	buf := make([]byte, 16<<10)
	var line []byte
	var off int64
	for {
		n, at, err := g.vm.Console().Follow(ctx, buf, off)
		off = at + int64(n)
		for _, c := range buf[:n] {
			if c == '\n' {
				g.line(string(bytes.TrimRight(line, "\r")))
				line = line[:0]
				continue
			}
			if len(line) < maxLine {
				line = append(line, c)
			}
		}
		if err != nil {
			return
		}
	}
}

// line takes one console line.
func (g *guest) line(l string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.tail) >= 20 {
		g.tail = g.tail[1:]
	}
	g.tail = append(g.tail, l)
	i := strings.Index(l, marker)
	if i < 0 {
		return
	}
	rest := l[i+len(marker):]
	if rest == "ready" {
		if !g.isReady {
			g.isReady = true
			close(g.ready)
		}
		return
	}
	id, rest, _ := strings.Cut(rest, " ")
	p, ok := g.pending[id]
	if !ok {
		return
	}
	word, arg, _ := strings.Cut(rest, " ")
	if word == p.end {
		if word == "status" {
			p.status, _ = strconv.Atoi(strings.TrimSpace(arg))
		}
		delete(g.pending, id)
		close(p.done)
		return
	}
	if word == "status" {
		return // a background command's start
	}
	if len(p.lines) < maxLines {
		p.lines = append(p.lines, rest)
	}
}

// console returns the last console lines, for error messages.
func (g *guest) console() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Join(g.tail, "\n")
}

// waitReady waits for the command loop's ready line.
func (g *guest) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = g.vm.Wait(ctx)
	}()
	select {
	case <-g.ready:
		return nil
	case <-done:
		if ctx.Err() != nil {
			return fmt.Errorf("guest %s: not ready after %v: %w (console:\n%s)", g.name, timeout, ctx.Err(), g.console())
		}
		return fmt.Errorf("guest %s: the VM ended before its command loop started (console:\n%s)", g.name, g.console())
	}
}

// start sends cmd (one line) and returns its pending; background
// commands end with an "end" line, the others with their status.
func (g *guest) start(cmd string, background bool) (string, *pending, error) {
	if strings.ContainsAny(cmd, "\n\r") {
		return "", nil, errors.New("a guest command is one line")
	}
	g.mu.Lock()
	g.seq++
	id := "c" + strconv.Itoa(g.seq)
	p := &pending{end: "status", done: make(chan struct{})}
	if background {
		p.end = "end"
	}
	g.pending[id] = p
	g.mu.Unlock()
	line := id + " " + strings.ReplaceAll(cmd, "@ID@", id)
	if background {
		line = id + " ( " + strings.ReplaceAll(cmd, "@ID@", id) + " ; echo " + marker + id + " end ) &"
	}
	g.inMu.Lock()
	_, err := io.WriteString(g.in, line+"\n")
	g.inMu.Unlock()
	if err != nil {
		g.drop(id)
		return "", nil, fmt.Errorf("guest %s: console input: %w", g.name, err)
	}
	return id, p, nil
}

func (g *guest) drop(id string) {
	g.mu.Lock()
	delete(g.pending, id)
	g.mu.Unlock()
}

// wait waits for p to end, or ctx; it returns p's lines and status.
func (g *guest) wait(ctx context.Context, id string, p *pending) ([]string, int, error) {
	select {
	case <-p.done:
		g.mu.Lock()
		defer g.mu.Unlock()
		return p.lines, p.status, nil
	case <-ctx.Done():
		g.drop(id)
		return nil, 0, fmt.Errorf("guest %s: command %s: %w (console:\n%s)", g.name, id, ctx.Err(), g.console())
	}
}

// run runs cmd in the guest and waits for its status, for at most timeout.
// "@ID@" in cmd becomes the command's id (for its result lines).
func (g *guest) run(ctx context.Context, cmd string, timeout time.Duration) ([]string, int, error) {
	id, p, err := g.start(cmd, false)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return g.wait(ctx, id, p)
}
