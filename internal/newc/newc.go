// Package newc writes cpio archives in the "newc" format (SVR4 portable
// ASCII, no checksum) that the Linux kernel unpacks into its initramfs,
// and appends such an archive to an existing initrd: the kernel unpacks
// concatenated archives in order, later files replacing earlier ones, so
// a test can add a program to a stock initrd without rebuilding it.
package newc

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// magic starts every newc header.
const magic = "070701"

// headerLen is a newc header's size: the magic and 13 fields of 8 hex
// digits.
const headerLen = 6 + 13*8

// Mode bits of a cpio entry (the type bits of stat's st_mode).
const (
	modeDir  = 0o040000
	modeFile = 0o100000
)

// Writer writes one newc archive. Call Close to write its trailer.
type Writer struct {
	w   io.Writer
	ino uint32
	err error
}

// NewWriter returns a Writer that writes an archive to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, ino: 1} }

// Dir adds a directory; its parent must have been added before (or exist
// in an archive the kernel unpacks earlier).
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	return w.entry(name, modeDir|uint32(perm.Perm()), 2, nil)
}

// File adds a regular file with perm and contents data.
func (w *Writer) File(name string, perm fs.FileMode, data []byte) error {
	return w.entry(name, modeFile|uint32(perm.Perm()), 1, data)
}

// Close writes the trailer entry. It does not close the underlying
// writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	w.writeEntry("TRAILER!!!", 0, 1, nil, 0)
	return w.err
}

// entry checks name and writes one entry.
func (w *Writer) entry(name string, mode, nlink uint32, data []byte) error {
	if w.err != nil {
		return w.err
	}
	name = strings.TrimPrefix(name, "/")
	if name == "" || name == "TRAILER!!!" || strings.Contains(name, "\x00") {
		return fmt.Errorf("cpio entry name %q is not allowed", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("cpio entry name %q has an empty, . or .. component", name)
		}
	}
	if uint64(len(data)) > 0xffffffff {
		return fmt.Errorf("cpio entry %s: %d bytes is more than newc can describe", name, len(data))
	}
	w.writeEntry(name, mode, nlink, data, w.ino)
	w.ino++
	return w.err
}

// writeEntry writes a header, the name and the data, each padded to 4
// bytes. Owner, group and times are zero: the archive is reproducible.
func (w *Writer) writeEntry(name string, mode, nlink uint32, data []byte, ino uint32) {
	var b bytes.Buffer
	b.WriteString(magic)
	for _, v := range []uint32{ino, mode, 0, 0, nlink, 0, uint32(len(data)), 0, 0, 0, 0, uint32(len(name) + 1), 0} {
		fmt.Fprintf(&b, "%08x", v)
	}
	b.WriteString(name)
	b.WriteByte(0)
	pad(&b, headerLen+len(name)+1)
	b.Write(data)
	pad(&b, len(data))
	w.write(b.Bytes())
}

func pad(b *bytes.Buffer, n int) {
	for ; n%4 != 0; n++ {
		b.WriteByte(0)
	}
}

func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	if _, err := w.w.Write(p); err != nil {
		w.err = fmt.Errorf("writing cpio archive: %w", err)
	}
}

// Entry is one file or directory for Append.
type Entry struct {
	// Name is the path inside the initramfs, without a leading slash.
	Name string
	// Mode holds the permission bits, and fs.ModeDir for a directory.
	Mode fs.FileMode
	// Data is a file's contents (nil for a directory).
	Data []byte
}

// Append writes initrd to dst followed by a gzip-compressed newc archive
// of entries, in order. initrd may itself be compressed or not (the
// kernel detects each archive's compression by its magic); if it is an
// uncompressed archive whose length is not a multiple of 4, zero padding
// keeps the next archive's start aligned, as the kernel requires of an
// uncompressed one (and skips before a compressed one).
func Append(dst io.Writer, initrd []byte, entries []Entry) error {
	if len(initrd) == 0 {
		return errors.New("appending to an initrd: the initrd is empty")
	}
	if _, err := dst.Write(initrd); err != nil {
		return fmt.Errorf("appending to an initrd: %w", err)
	}
	if r := len(initrd) % 4; r != 0 {
		if _, err := dst.Write(make([]byte, 4-r)); err != nil {
			return fmt.Errorf("appending to an initrd: %w", err)
		}
	}
	zw, err := gzip.NewWriterLevel(dst, gzip.BestSpeed)
	if err != nil {
		return err
	}
	cw := NewWriter(zw)
	for _, e := range entries {
		if e.Mode.IsDir() {
			err = cw.Dir(e.Name, e.Mode)
		} else {
			err = cw.File(e.Name, e.Mode, e.Data)
		}
		if err != nil {
			return err
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("appending to an initrd: %w", err)
	}
	return nil
}
