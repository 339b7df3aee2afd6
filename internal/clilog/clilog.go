// Package clilog is the logging of colibri's command-line programs: a
// slog handler for people (one line per record: time, level, call site,
// message, key=value attributes) and the loggers built on it.
package clilog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// New returns the logger of a command that runs VMs (boot, up, exp): on
// w, at debug level when verbose, and reporting only errors otherwise,
// with each record's call site.
func New(verbose bool, w io.Writer) *slog.Logger {
	level := slog.LevelError
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(NewHandler(w, level, true))
}

// Agent returns the agent's logger: on w, at info level (debug when
// verbose), without call sites.
func Agent(verbose bool, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(NewHandler(w, level, false))
}

// consoleTimeFormat is the time at the start of a line (ISO 8601 with
// milliseconds, local time).
const consoleTimeFormat = "2006-01-02T15:04:05.000Z0700"

// consoleHandler is a slog.Handler for people: one line per record, with
// the time, the level, the call site (if asked for) and the message
// separated by tabs, then a tab and the attributes as key=value separated
// by spaces (a group's keys prefixed with its name and a dot; a value with
// spaces, quotes, '=' or unprintable characters quoted as a Go string):
//
//	2026-12-02T06:31:00.123Z	INFO	vmm/vm.go:349	VM created	kernel=/boot/vmlinuz cpus=1
type consoleHandler struct {
	mu     *sync.Mutex // shared by the handlers derived from one: one line at a time on w
	w      io.Writer
	level  slog.Leveler
	caller bool
	prefix string // the open groups' names, each followed by a dot
	attrs  []byte // the WithAttrs attributes, formatted, each after a space
}

// NewHandler returns a consoleHandler writing records of level and
// above to w, with their call site when caller is set.
func NewHandler(w io.Writer, level slog.Leveler, caller bool) *consoleHandler {
	return &consoleHandler{mu: new(sync.Mutex), w: w, level: level, caller: caller}
}

// Enabled reports whether records of level l are written.
func (h *consoleHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// WithAttrs returns a handler that writes attrs on every line after the
// record's own fields.
func (h *consoleHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	h2.attrs = slices.Clip(h.attrs) // appending copies: h keeps its own
	for _, a := range attrs {
		h2.attrs = appendAttr(h2.attrs, h.prefix, a)
	}
	return &h2
}

// WithGroup returns a handler that puts the attributes it is given from
// now on in the group name.
func (h *consoleHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "."
	return &h2
}

// Handle writes r as one line.
func (h *consoleHandler) Handle(_ context.Context, r slog.Record) error {
	buf := make([]byte, 0, 256)
	if !r.Time.IsZero() {
		buf = r.Time.AppendFormat(buf, consoleTimeFormat)
		buf = append(buf, '\t')
	}
	buf = append(buf, r.Level.String()...)
	buf = append(buf, '\t')
	if h.caller && r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		if f.File != "" {
			buf = append(buf, shortFile(f.File)...)
			buf = append(buf, ':')
			buf = strconv.AppendInt(buf, int64(f.Line), 10)
			buf = append(buf, '\t')
		}
	}
	buf = append(buf, r.Message...)
	n := len(buf)
	buf = append(buf, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		buf = appendAttr(buf, h.prefix, a)
		return true
	})
	if len(buf) > n {
		buf[n] = '\t' // the attributes' leading space
	}
	buf = append(buf, '\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.w.Write(buf)
	return err
}

// shortFile is the last directory and the name of a source file
// (vmm/vm.go).
func shortFile(file string) string {
	i := strings.LastIndexByte(file, '/')
	if i < 0 {
		return file
	}
	if j := strings.LastIndexByte(file[:i], '/'); j >= 0 {
		return file[j+1:]
	}
	return file
}

// appendAttr appends " key=value" for a, its key after prefix; a group's
// attributes each with the group's name in their prefix (an empty name
// puts them inline); nothing for an empty attribute or an empty group.
func appendAttr(buf []byte, prefix string, a slog.Attr) []byte {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return buf
	}
	if a.Value.Kind() == slog.KindGroup {
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			buf = appendAttr(buf, prefix, g)
		}
		return buf
	}
	buf = append(buf, ' ')
	buf = appendString(buf, prefix+a.Key)
	buf = append(buf, '=')
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		return appendString(buf, v.String())
	case slog.KindTime:
		return v.Time().AppendFormat(buf, time.RFC3339Nano)
	case slog.KindAny:
		// errors, Stringers, slices ... as fmt prints them.
		return appendString(buf, fmt.Sprint(v.Any()))
	default: // ints, floats, bools, durations
		return append(buf, v.String()...)
	}
}

// appendString appends s, quoted when it is empty or holds a space, a
// quote, '=' or anything unprintable.
func appendString(buf []byte, s string) []byte {
	if needsQuote(s) {
		return strconv.AppendQuote(buf, s)
	}
	return append(buf, s...)
}

func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b <= ' ' || b == '=' || b == '"' || b == 0x7f {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}
