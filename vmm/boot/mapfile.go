package boot

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// ErrFileChanged is wrapped when a mapped image file shrank while colibri
// read it (its pages past the new end fault).
var ErrFileChanged = errors.New("an image file was truncated while colibri read it")

// File is a kernel or initrd image mapped read-only: its bytes are the
// page cache's, so reading a 66 MB vmlinux costs the VMM no heap (and no
// RSS once the file is closed), where os.ReadFile would copy it into the
// Go heap and leave the garbage collector a 66 MB peak to return.
//
// A file that shrinks while mapped makes its lost pages fault: read its
// bytes only inside Guard, which turns that into ErrFileChanged.
type File struct {
	data   []byte
	mapped bool
}

// OpenFile maps the file at path. A file that cannot be mapped (empty,
// not a regular file) is read into memory instead.
func OpenFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Mode().IsRegular() && st.Size() > 0 && st.Size() == int64(int(st.Size())) {
		b, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
		if err == nil {
			// Read once, front to back: readahead may be generous, and
			// the pages need not stay mapped long.
			_ = unix.Madvise(b, unix.MADV_SEQUENTIAL)
			return &File{data: b, mapped: true}, nil
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return &File{data: b}, nil
}

// Bytes returns the file's contents, valid until Close; read them inside
// Guard.
func (f *File) Bytes() []byte { return f.data }

// Close unmaps the file; its bytes must not be used after.
func (f *File) Close() error {
	b := f.data
	f.data = nil
	if !f.mapped || b == nil {
		return nil
	}
	if err := unix.Munmap(b); err != nil {
		return fmt.Errorf("unmapping an image file: %w", err)
	}
	return nil
}

// Guard runs fn, which reads mapped Files, on the calling goroutine, and
// turns a fault on their pages (the file truncated under the mapping)
// into an error wrapping ErrFileChanged instead of a crash. (Go code
// faults at an address other than nil's only on memory mapped outside
// its heap, so no other bug is mistaken for it; a nil dereference still
// panics.)
func Guard(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if fault, ok := r.(interface{ Addr() uintptr }); ok {
			err = fmt.Errorf("%w (fault at %#x)", ErrFileChanged, fault.Addr())
			return
		}
		panic(r)
	}()
	return fn()
}
