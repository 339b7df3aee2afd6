// Package exepages lets a long-running process give back the pages of its
// own executable that only its start-up touched.
//
// A Go binary's text and read-only data are mapped from the executable
// file, and the kernel maps them in by the 64 KiB window around each page
// faulted (fault-around): package initialisation, flag and configuration
// parsing and VM setup touch almost every window of a few-megabyte binary,
// so all of it stays resident for the life of the process although the
// steady state runs a small part of it. Release drops the process's
// mappings of those pages; they are clean copies of the file, still in
// the page cache for any other process, and whatever the process runs
// again is mapped back by its next fault.
package exepages

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/logattr"
)

// Segment is a read-only loadable segment of the running executable, as
// mapped in this process.
type Segment struct {
	// Start and End are its virtual addresses, End excluded.
	Start, End uintptr
	// Exec says it is executable (the text); otherwise it is read-only
	// data.
	Exec bool
}

// ELF program header layout (x86-64 and the other 64-bit little-endian
// targets Go builds for).
const (
	phdrSize = 56
	// Auxiliary vector keys (<linux/auxvec.h>).
	atPhdr  = 3
	atPhnum = 5

	ptLoad = 1
	ptPhdr = 6
	pfX    = 1
	pfW    = 2
	// maxPhnum bounds the table read from memory (a Go binary has six).
	maxPhnum = 64
)

// ErrNoProgramHeaders says the kernel's auxiliary vector does not locate
// the executable's program headers, or they do not describe themselves
// (no PT_PHDR entry), so their load address is unknown.
var ErrNoProgramHeaders = errors.New("the executable's program headers are not where the auxiliary vector says")

// ReadOnly returns the running executable's loadable segments that are
// not writable, read from its program headers in memory (located by the
// auxiliary vector's AT_PHDR and AT_PHNUM, with PT_PHDR giving the load
// bias of a position-independent executable). It opens no file.
func ReadOnly() ([]Segment, error) {
	auxv, err := unix.Auxv()
	if err != nil {
		return nil, fmt.Errorf("reading the auxiliary vector: %w", err)
	}
	var phdrAddr, phnum uintptr
	for _, kv := range auxv {
		switch kv[0] {
		case atPhdr:
			phdrAddr = kv[1]
		case atPhnum:
			phnum = kv[1]
		}
	}
	if phdrAddr == 0 || phnum == 0 || phnum > maxPhnum {
		return nil, fmt.Errorf("%w (AT_PHDR %#x, AT_PHNUM %d)", ErrNoProgramHeaders, phdrAddr, phnum)
	}
	table := unsafe.Slice((*byte)(pointer(phdrAddr)), phnum*phdrSize)
	return readOnlySegments(table, phdrAddr)
}

// readOnlySegments decodes the program header table that is mapped at
// tableAddr and returns its non-writable PT_LOAD segments, relocated by
// the bias PT_PHDR gives.
func readOnlySegments(table []byte, tableAddr uintptr) ([]Segment, error) {
	type prog struct {
		typ, flags   uint32
		vaddr, memsz uint64
	}
	le := binary.LittleEndian
	var progs []prog
	var bias uintptr
	havePhdr := false
	for off := 0; off+phdrSize <= len(table); off += phdrSize {
		b := table[off:]
		p := prog{typ: le.Uint32(b[0:]), flags: le.Uint32(b[4:]), vaddr: le.Uint64(b[16:]), memsz: le.Uint64(b[40:])}
		if p.typ == ptPhdr {
			bias, havePhdr = tableAddr-uintptr(p.vaddr), true
		}
		progs = append(progs, p)
	}
	if !havePhdr {
		return nil, fmt.Errorf("%w: no PT_PHDR entry among %d", ErrNoProgramHeaders, len(progs))
	}
	var segs []Segment
	for _, p := range progs {
		if p.typ != ptLoad || p.flags&pfW != 0 || p.memsz == 0 {
			continue
		}
		start := bias + uintptr(p.vaddr)
		segs = append(segs, Segment{Start: start, End: start + uintptr(p.memsz), Exec: p.flags&pfX != 0})
	}
	return segs, nil
}

// Release drops this process's mappings of the pages that lie wholly
// inside segs (madvise MADV_DONTNEED; a page shared with a writable
// segment is left alone) and returns how many bytes that covered. It is
// for read-only file mappings only, as ReadOnly returns them: for those
// it loses nothing, and the next access faults the page back in from the
// page cache.
func Release(segs []Segment) (uintptr, error) {
	page := uintptr(unix.Getpagesize())
	var total uintptr
	for _, s := range segs {
		start := (s.Start + page - 1) &^ (page - 1)
		end := s.End &^ (page - 1)
		if end <= start {
			continue
		}
		mem := unsafe.Slice((*byte)(pointer(start)), end-start)
		if err := unix.Madvise(mem, unix.MADV_DONTNEED); err != nil {
			return total, fmt.Errorf("releasing the executable's pages at %#x–%#x: %w", start, end, err)
		}
		total += end - start
	}
	return total, nil
}

// pointer turns an address the kernel gave (the auxiliary vector's) or one
// derived from it into a pointer. The memory is the executable's mapping,
// never Go-managed.
func pointer(addr uintptr) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&addr))
}

// ReleaseAll is Release of every segment ReadOnly finds.
func ReleaseAll() (uintptr, error) {
	segs, err := ReadOnly()
	if err != nil {
		return 0, err
	}
	return Release(segs)
}

// ReleaseAndLog is ReleaseAll for a process that goes on either way: it
// logs what was released, or why nothing was, at debug level.
func ReleaseAndLog(log *slog.Logger) {
	n, err := ReleaseAll()
	if err != nil {
		log.Debug("start-up pages of the executable kept", logattr.Err(err))
		return
	}
	log.Debug("start-up pages of the executable released", "KiB", n>>10)
}
