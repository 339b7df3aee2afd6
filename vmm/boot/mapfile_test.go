package boot

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	want := bytes.Repeat([]byte("colibri "), 10000)
	p := filepath.Join(dir, "img")
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !f.mapped {
		t.Error("a regular file was read, not mapped")
	}
	if !bytes.Equal(f.Bytes(), want) {
		t.Error("the mapped bytes differ from the file's")
	}
	if err := f.Close(); err != nil || f.Bytes() != nil {
		t.Errorf("Close: %v, bytes left %d", err, len(f.Bytes()))
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if f, err := OpenFile(empty); err != nil || len(f.Bytes()) != 0 {
		t.Errorf("empty file: %v, %d bytes", err, len(f.Bytes()))
	}
	if _, err := OpenFile(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent file: %v, want ErrNotExist", err)
	}
}

// TestGuardTruncated: a mapped file truncated under its reader is an
// error wrapping ErrFileChanged, not a crash.
func TestGuardTruncated(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	var sum int
	err = Guard(func() error {
		for _, b := range f.Bytes() {
			sum += int(b)
		}
		return nil
	})
	if !errors.Is(err, ErrFileChanged) {
		t.Fatalf("reading a truncated mapping: %v, want ErrFileChanged", err)
	}
	want := errors.New("fn's own")
	if err := Guard(func() error { return want }); err != want {
		t.Errorf("Guard returned %v, want fn's error", err)
	}
}

// TestGuardNil: a nil dereference inside Guard is not mistaken for a
// truncated file: it still panics.
func TestGuardNil(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a nil dereference inside Guard did not panic")
		}
	}()
	var p *Kernel
	_ = Guard(func() error { _ = p.Entry; return nil })
}

// TestLoadTruncated: a mapped vmlinux, or initrd, truncated between Parse
// and Load (the copy into guest memory faults inside memmove) makes Load
// in Guard fail with ErrFileChanged, and the process goes on.
func TestLoadTruncated(t *testing.T) {
	for _, which := range []string{"kernel", "initrd"} {
		t.Run(which, func(t *testing.T) {
			dir := t.TempDir()
			kp, ip := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd")
			if err := os.WriteFile(kp, fakeVmlinux(4<<20, 4<<20, 0x1000000, 0x1000000), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(ip, bytes.Repeat([]byte{0xab}, 4<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			kf, err := OpenFile(kp)
			if err != nil {
				t.Fatal(err)
			}
			defer kf.Close()
			inf, err := OpenFile(ip)
			if err != nil {
				t.Fatal(err)
			}
			defer inf.Close()
			var k *Kernel
			if err := Guard(func() (err error) { k, err = Parse(kf.Bytes()); return err }); err != nil {
				t.Fatal(err)
			}
			victim := map[string]string{"kernel": kp, "initrd": ip}[which]
			if err := os.Truncate(victim, 4096); err != nil {
				t.Fatal(err)
			}
			mem := newMem(t, 64<<20)
			err = Guard(func() error {
				_, err := Load(mem, Params{Kernel: k, Initrd: inf.Bytes(), Cmdline: "console=ttyS0"})
				return err
			})
			if !errors.Is(err, ErrFileChanged) {
				t.Fatalf("Load of a truncated %s: %v, want ErrFileChanged", which, err)
			}
		})
	}
}

// TestCacheEntryMapped: a kernel read from the cache is mapped, not
// copied, and Close unmaps it.
func TestCacheEntryMapped(t *testing.T) {
	dir := t.TempDir()
	vmlinux := fakeVmlinux(8192, 1<<20, 0x1000000, 0x1000000)
	c := newCache(dir, []byte("a bzImage"))
	if err := c.put(vmlinux); err != nil {
		t.Fatal(err)
	}
	f, err := c.get(uint64(len(vmlinux)))
	if err != nil {
		t.Fatal(err)
	}
	if !f.mapped || !bytes.Equal(f.Bytes(), vmlinux) {
		t.Fatalf("cache entry: mapped %v, %d bytes", f.mapped, len(f.Bytes()))
	}
	k := &Kernel{file: f}
	if err := k.setELF(f.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil || k.Segments != nil || f.Bytes() != nil {
		t.Errorf("Close: %v; segments %d, bytes %d left", err, len(k.Segments), len(f.Bytes()))
	}
	if _, err := c.get(uint64(len(vmlinux)) + 1); err == nil {
		t.Error("an entry of the wrong size was returned")
	}
}
