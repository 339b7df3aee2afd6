package clilog

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/slogtest"
	"time"
)

// TestConsoleHandlerLines: what a user reads on stderr, byte for byte.
func TestConsoleHandlerLines(t *testing.T) {
	var buf bytes.Buffer
	h := NewHandler(&buf, slog.LevelInfo, false)
	at := time.Date(2026, 12, 2, 6, 31, 0, 123456789, time.UTC)
	emit := func(h slog.Handler, level slog.Level, msg string, attrs ...slog.Attr) {
		r := slog.NewRecord(at, level, msg, 0)
		r.AddAttrs(attrs...)
		if h.Enabled(t.Context(), level) {
			if err := h.Handle(t.Context(), r); err != nil {
				t.Fatal(err)
			}
		}
	}
	emit(h, slog.LevelInfo, "VM created", slog.String("kernel", "/boot/vmlinuz"), slog.Bool("elf", true), slog.Int("cpus", 2), slog.Uint64("mem_mib", 512))
	emit(h, slog.LevelDebug, "not shown")
	emit(h, slog.LevelWarn, "graceful stop impossible: forcing", slog.String("vm", "a b"), slog.Any("error", errors.New(`open "x": no such file`)))
	emit(h, slog.LevelError, "no attributes")
	emit(h.WithAttrs([]slog.Attr{slog.String("vm", "a")}).WithGroup("g"), slog.LevelInfo, "event",
		slog.String("reason", ""), slog.Duration("took", 1500*time.Microsecond), slog.Any("cpus", []int{0, 2}), slog.Attr{}, slog.Group("", slog.Int("inline", 1)))
	want := "2026-12-02T06:31:00.123Z\tINFO\tVM created\tkernel=/boot/vmlinuz elf=true cpus=2 mem_mib=512\n" +
		"2026-12-02T06:31:00.123Z\tWARN\tgraceful stop impossible: forcing\tvm=\"a b\" error=\"open \\\"x\\\": no such file\"\n" +
		"2026-12-02T06:31:00.123Z\tERROR\tno attributes\n" +
		"2026-12-02T06:31:00.123Z\tINFO\tevent\tvm=a g.reason=\"\" g.took=1.5ms g.cpus=\"[0 2]\" g.inline=1\n"
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestConsoleHandlerCaller: the call site, as the last directory and the
// file, before the message.
func TestConsoleHandlerCaller(t *testing.T) {
	var buf bytes.Buffer
	slog.New(NewHandler(&buf, slog.LevelDebug, true)).Debug("here")
	fields := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\t")
	if len(fields) != 4 || fields[1] != "DEBUG" || !strings.HasPrefix(fields[2], "clilog/clilog_test.go:") || fields[3] != "here" {
		t.Errorf("got %q, want time, DEBUG, clilog/clilog_test.go:LINE, here", buf.String())
	}
}

// TestConsoleHandlerConcurrent: lines written from many goroutines, by
// handlers derived from one, do not interleave.
func TestConsoleHandlerConcurrent(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewHandler(&buf, slog.LevelInfo, false))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			l := log.With(slog.Int("g", i))
			for j := range 100 {
				l.Info("line", slog.Int("j", j))
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 800 {
		t.Fatalf("%d lines, want 800", len(lines))
	}
	for _, l := range lines {
		if f := strings.Split(l, "\t"); len(f) != 4 || f[2] != "line" || !strings.HasPrefix(f[3], "g=") {
			t.Fatalf("mangled line %q", l)
		}
	}
}

// TestConsoleHandlerSlogtest runs the standard library's conformance
// checks for handlers on consoleHandler, reading its lines back.
func TestConsoleHandlerSlogtest(t *testing.T) {
	var buf bytes.Buffer
	h := NewHandler(&buf, slog.LevelDebug, false)
	results := func() []map[string]any {
		var ms []map[string]any
		for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
			m, err := parseConsoleLine(line)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			ms = append(ms, m)
		}
		return ms
	}
	if err := slogtest.TestHandler(h, results); err != nil {
		t.Error(err)
	}
}

// parseConsoleLine reads a consoleHandler line (without caller) back into
// the map slogtest wants: time, level, msg and the attributes, a dotted
// key as nested maps.
func parseConsoleLine(line string) (map[string]any, error) {
	m := map[string]any{}
	f := strings.SplitN(line, "\t", 4)
	if _, err := time.Parse(consoleTimeFormat, f[0]); err == nil {
		m[slog.TimeKey] = f[0]
		f = f[1:]
	}
	if len(f) < 2 {
		return nil, fmt.Errorf("want level and message")
	}
	m[slog.LevelKey], m[slog.MessageKey] = f[0], f[1]
	if len(f) < 3 {
		return m, nil
	}
	s := f[2]
	for s != "" {
		key, rest, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("no '=' in %q", s)
		}
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, err
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			val, rest, _ = strings.Cut(rest, " ")
			rest = " " + rest
		}
		s = strings.TrimPrefix(rest, " ")
		cur := m
		parts := strings.Split(key, ".")
		for _, p := range parts[:len(parts)-1] {
			sub, ok := cur[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				cur[p] = sub
			}
			cur = sub
		}
		cur[parts[len(parts)-1]] = val
	}
	return m, nil
}
