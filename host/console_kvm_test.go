package host_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/internal/tinykernel"
)

// blockedWriter blocks every Write until release is closed, like a pipe
// nobody reads or a stopped terminal.
type blockedWriter struct{ release chan struct{} }

func (w blockedWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

// countingWriter counts what it is given.
type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// TestKVMStuckConsoleCostsOnlyItsVM runs two guests that write to their
// serial consoles without pause. The console sink of one of them never
// returns (a pipe nobody reads). Its guest must go on running (its
// counter moves), the output its sink cannot take is counted as lost,
// the other guest's sink gets everything, and stopping and deleting the
// VM does not hang on the stuck sink.
func TestKVMStuckConsoleCostsOnlyItsVM(t *testing.T) {
	testenv.RequireKVM(t)
	kernel, err := tinykernel.Write(t.TempDir(), "chatter", tinykernel.Chatter)
	if err != nil {
		t.Fatal(err)
	}
	const ring, enough = 4 << 10, 16 << 10
	stuck := blockedWriter{release: make(chan struct{})}
	defer close(stuck.release)
	var free countingWriter
	h, err := host.New(context.Background(), host.Config{
		ConsoleSink: func(vm string) io.Writer {
			if vm == "stuck" {
				return stuck
			}
			return &free
		},
		ConsoleBuffer: ring,
		StopTimeout:   time.Second,
		Logger:        testLogger(t, slog.LevelWarn),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	var vms []*host.VM
	for _, name := range []string{"stuck", "free"} {
		v, err := h.CreateVM(spec.VM{Name: name, Kernel: kernel, Mem: 64 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Start(); err != nil {
			t.Fatal(err)
		}
		vms = append(vms, v)
	}
	stuckVM, freeVM := vms[0], vms[1]
	// Four times the 4 KiB ring: the stuck sink has fallen behind. (The
	// UART takes a byte per VM exit: about 1,000 a second in the sandbox.)
	deadline := time.Now().Add(2 * time.Minute)
	for stuckVM.Info().ConsoleBytes < enough || freeVM.Info().ConsoleBytes < enough {
		if time.Now().After(deadline) {
			t.Fatalf("console bytes after 2 minutes: stuck %d, free %d (a guest is blocked)",
				stuckVM.Info().ConsoleBytes, freeVM.Info().ConsoleBytes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitMoving(t, stuckVM, "the guest whose console is stuck")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, v := range vms {
		if err := v.Stop(ctx, host.StopOptions{Force: true}); err != nil {
			t.Fatalf("stop %s: %v", v.Name(), err)
		}
	}
	if err := freeVM.Console().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	si, fi := stuckVM.Info(), freeVM.Info()
	t.Logf("stuck: %d bytes written, %d lost; free: %d written, %d lost, %d in its sink",
		si.ConsoleBytes, si.ConsoleLost, fi.ConsoleBytes, fi.ConsoleLost, free.n.Load())
	// The stuck sink holds at most the chunk it is blocked on (no more
	// than the ring) and the ring; everything else is lost.
	if si.ConsoleLost == 0 || si.ConsoleLost < si.ConsoleBytes-2*ring {
		t.Errorf("stuck console: %d of %d bytes counted lost", si.ConsoleLost, si.ConsoleBytes)
	}
	if fi.ConsoleLost != 0 || free.n.Load() != fi.ConsoleBytes {
		t.Errorf("free console: sink got %d of %d bytes, %d counted lost", free.n.Load(), fi.ConsoleBytes, fi.ConsoleLost)
	}
	start := time.Now()
	if err := h.Delete("stuck", false); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("deleting the VM with a stuck console took %v", d)
	}
}
