package solo

import (
	"io"
	"testing"
)

// chunkReader returns its chunks one per Read (each at most len(p) bytes).
type chunkReader struct{ chunks [][]byte }

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// TestEscapeReaderNeverOverfills: a Ctrl-A held from the end of one read
// comes out before the next read's bytes; a full next read then has one
// byte more than the caller's buffer, which must wait for the next Read
// (the old reader returned n > len(p), and the console pump panicked).
func TestEscapeReaderNeverOverfills(t *testing.T) {
	quit := 0
	e := &escapeReader{r: &chunkReader{chunks: [][]byte{[]byte("ab\x01"), []byte("cde"), []byte("\x01\x01f\x01x"), []byte("lost")}}, quit: func() { quit++ }}
	var got []byte
	p := make([]byte, 3)
	for i := 0; i < 20; i++ {
		n, err := e.Read(p)
		if n > len(p) || n < 0 {
			t.Fatalf("Read returned %d for a buffer of %d", n, len(p))
		}
		got = append(got, p[:n]...)
		if err == io.EOF {
			break
		}
	}
	if want := "ab\x01cde\x01f"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if quit != 1 {
		t.Fatalf("quit called %d times, want 1", quit)
	}
}
