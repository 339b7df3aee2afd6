package blk

import (
	"errors"
	"strings"
	"testing"
)

// failing is an image whose next Sync or WriteAt fails once, the way a
// host file system reports lost writeback: once, to the first fsync.
type failing struct {
	imageFile
	failSync, failWrite bool
}

var errInjected = errors.New("injected I/O error")

func (f *failing) Sync() error {
	if f.failSync {
		f.failSync = false
		return errInjected
	}
	return f.imageFile.Sync()
}

func (f *failing) WriteAt(p []byte, off int64) (int, error) {
	if f.failWrite {
		f.failWrite = false
		return 0, errInjected
	}
	return f.imageFile.WriteAt(p, off)
}

func openRW(t *testing.T, path string) *Blk {
	t.Helper()
	b, err := New(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestFlushFailsAfterLostWrite: once a write or a flush of the image
// failed, data the guest was told is written may be gone, so every later
// flush fails too (the host kernel reports a writeback error to one fsync
// only) until the device is reset.
func TestFlushFailsAfterLostWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    failing
	}{{"fsync", failing{failSync: true}}, {"write", failing{failWrite: true}}} {
		t.Run(tc.name, func(t *testing.T) {
			b := openRW(t, image(t, 8))
			f := tc.f
			f.imageFile = b.img
			b.img = &f
			e := newEnv(t)
			w := e.buf(SectorSize)
			c, st := e.request(TypeOut, 1, [][]byte{w}, false)
			b.serve(c)
			if tc.f.failWrite && st[0] != StatusIOErr {
				t.Fatalf("failed write: status %d, want IOERR", st[0])
			}
			for i := 0; i < 3; i++ {
				c, st := e.request(TypeFlush, 0, nil, false)
				if b.serve(c); st[0] != StatusIOErr {
					t.Fatalf("flush %d after the lost write: status %d, want IOERR", i+1, st[0])
				}
			}
			b.Reset()
			c, st = e.request(TypeFlush, 0, nil, false)
			if b.serve(c); st[0] != StatusOK {
				t.Fatalf("flush after reset: status %d, want OK", st[0])
			}
		})
	}
}

// TestImageLocked: an image open read-write is locked against every other
// open, one open read-only against writers.
func TestImageLocked(t *testing.T) {
	path := image(t, 8)
	b := openRW(t, path)
	for _, ro := range []bool{false, true} {
		if o, err := New(Config{Path: path, ReadOnly: ro}); err == nil {
			o.Close()
			t.Errorf("opened (read-only %v) an image another device has open read-write", ro)
		} else if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "in use") {
			t.Errorf("error %q does not name the image and say it is in use", err)
		}
	}
	b.Close()
	r1, err := New(Config{Path: path, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := New(Config{Path: path, ReadOnly: true})
	if err != nil {
		t.Fatalf("a second read-only open: %v", err)
	}
	defer r2.Close()
	if w, err := New(Config{Path: path}); err == nil {
		w.Close()
		t.Error("opened read-write an image open read-only elsewhere")
	}
}

// TestGetIDHidesHostPath: GET_ID never tells the guest the host file's
// name.
func TestGetIDHidesHostPath(t *testing.T) {
	b := openRW(t, image(t, 8))
	e := newEnv(t)
	id := e.buf(idLen)
	c, st := e.request(TypeGetID, 0, [][]byte{id}, true)
	if b.serve(c); st[0] != StatusOK {
		t.Fatalf("GET_ID status %d", st[0])
	}
	if strings.Contains(string(id), "disk.img") {
		t.Errorf("GET_ID %q reveals the image file's name", id)
	}
	for _, bad := range []string{"012345678901234567890", "tab\there", "caf\u00e9"} {
		if b, err := New(Config{Path: image(t, 8), Serial: bad}); err == nil {
			b.Close()
			t.Errorf("serial %q accepted", bad)
		}
	}
}
