package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/testenv"
)

func TestConsoleRing(t *testing.T) {
	c := newConsole(8, nil)
	buf := make([]byte, 16)
	c.Write([]byte("abc"))
	if n, at := c.ReadAt(buf, 0); string(buf[:n]) != "abc" || at != 0 {
		t.Fatalf("read %q at %d", buf[:n], at)
	}
	c.Write([]byte("defghij")) // 10 bytes in all: "ab" left the ring
	n, at := c.ReadAt(buf, 0)
	if string(buf[:n]) != "cdefghij" || at != 2 {
		t.Fatalf("after wrap: read %q at %d, want cdefghij at 2", buf[:n], at)
	}
	if n, at := c.ReadAt(buf[:3], 5); string(buf[:n]) != "fgh" || at != 5 {
		t.Fatalf("read %q at %d, want fgh at 5", buf[:n], at)
	}
	c.Write([]byte("0123456789ABCDEFGHIJ")) // more than the ring at once
	if n, at := c.ReadAt(buf, 0); string(buf[:n]) != "CDEFGHIJ" || at != 22 {
		t.Fatalf("read %q at %d, want CDEFGHIJ at 22", buf[:n], at)
	}
	if n, at := c.ReadAt(buf, 100); n != 0 || at != 30 {
		t.Fatalf("read past the end: %d bytes at %d", n, at)
	}
	if c.Written() != 30 {
		t.Fatalf("written %d, want 30", c.Written())
	}
}

func TestConsoleSinkGetsEveryByte(t *testing.T) {
	var sink testenv.Buffer
	c := newConsole(1<<10, &sink)
	var want strings.Builder
	for i := range 100 {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		for j := range len(line) { // the UART writes a byte at a time
			c.Write([]byte{line[j]})
		}
		if i%10 == 0 {
			if err := c.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := sink.String(); got != want.String() {
				t.Fatalf("after Sync the sink has %d bytes, want %d", len(got), want.Len())
			}
		}
	}
	c.close(time.Minute)
	if got := sink.String(); got != want.String() || c.Lost() != 0 {
		t.Fatalf("sink got %d bytes (lost %d), want %d", len(got), c.Lost(), want.Len())
	}
}

// stuckSink blocks its first Write until release is closed.
type stuckSink struct {
	entered, release chan struct{}
	once             sync.Once
	testenv.Buffer
}

func (s *stuckSink) Write(p []byte) (int, error) {
	s.once.Do(func() {
		close(s.entered)
		<-s.release
	})
	return s.Buffer.Write(p)
}

// A sink that blocks (a full pipe, a stopped terminal) must not block the
// guest: its writes go on, and what leaves the ring before the sink
// catches up is counted and announced.
func TestConsoleStuckSinkDoesNotBlockTheGuest(t *testing.T) {
	sink := &stuckSink{entered: make(chan struct{}), release: make(chan struct{})}
	c := newConsole(16, sink)
	c.Write([]byte("first"))
	<-sink.entered // the sink's goroutine is stuck with "first"
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			c.Write([]byte("0123456789")) // 10,000 bytes through a 16-byte ring
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("console writes blocked behind a stuck sink")
	}
	if lost := c.Lost(); lost != 9984 { // counted before the sink knows
		t.Fatalf("lost %d while the sink is stuck, want 9984", lost)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.Sync(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync with a stuck sink: %v, want the deadline", err)
	}
	start := time.Now()
	c.close(50 * time.Millisecond)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("close waited %v for a stuck sink", d)
	}
	close(sink.release)
	<-c.sinkDone
	got := sink.String()
	want := "first\n[colibri: 9984 bytes of console output lost: this output fell behind the guest]\n4567890123456789"
	if got != want || c.Lost() != 9984 {
		t.Fatalf("sink got %q, lost %d; want %q, lost 9984", got, c.Lost(), want)
	}
	if err := c.Sync(context.Background()); err != nil {
		t.Fatalf("Sync after the sink ended: %v", err)
	}
}

func TestConsoleFollow(t *testing.T) {
	c := newConsole(64, nil)
	var got strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	var ferr error
	go func() {
		defer wg.Done()
		buf := make([]byte, 4)
		var off int64
		for {
			n, at, err := c.Follow(context.Background(), buf, off)
			if err != nil {
				ferr = err
				return
			}
			got.Write(buf[:n])
			off = at + int64(n)
		}
	}()
	for _, s := range []string{"hello ", "from ", "the guest"} {
		c.Write([]byte(s))
		time.Sleep(10 * time.Millisecond)
	}
	c.close(time.Second)
	wg.Wait()
	if got.String() != "hello from the guest" || ferr != io.EOF {
		t.Fatalf("followed %q, then %v", got.String(), ferr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	c2 := newConsole(64, nil)
	if _, _, err := c2.Follow(ctx, make([]byte, 4), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Follow with nothing written: %v", err)
	}
}
