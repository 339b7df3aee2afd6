package host

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConsoleRing(t *testing.T) {
	var sink bytes.Buffer
	c := newConsole(8, &sink)
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
	if sink.String() != "abcdefghij0123456789ABCDEFGHIJ" || c.Written() != 30 {
		t.Fatalf("sink got %q, written %d", sink.String(), c.Written())
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
	c.close()
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
