//go:build linux && amd64

package main

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

const pageSize = 4096

// page is one locked page of the attacker's memory and its guest-physical
// address, which the devices see.
type page struct {
	b  []byte
	pa uint64
}

// zero clears the page.
func (p *page) zero() { clear(p.b) }

// fill sets every byte of the page to v.
func (p *page) fill(v byte) {
	for i := range p.b {
		p.b[i] = v
	}
}

// arena is a locked anonymous mapping handed out page by page.
type arena struct {
	mem   []byte
	pages []*page
	next  int
}

// newArena maps n pages, locks them in memory and finds their physical
// addresses in /proc/self/pagemap. Huge pages are refused for the
// mapping and compaction is asked not to move locked pages, so the
// addresses hold for the program's life.
func newArena(n int) (*arena, error) {
	_ = writeFile("/proc/sys/vm/compact_unevictable_allowed", "0")
	mem, err := unix.Mmap(-1, 0, n*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap %d pages: %w", n, err)
	}
	_ = unix.Madvise(mem, unix.MADV_NOHUGEPAGE)
	if err := unix.Mlock(mem); err != nil {
		return nil, fmt.Errorf("mlock %d pages: %w", n, err)
	}
	a := &arena{mem: mem}
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for i := 0; i < n; i++ {
		b := mem[i*pageSize : (i+1)*pageSize : (i+1)*pageSize]
		b[0] = 1 // fault it in (MAP_POPULATE did already)
		b[0] = 0
		va := uint64(uintptrOf(b))
		var e [8]byte
		if _, err := f.ReadAt(e[:], int64(va/pageSize*8)); err != nil {
			return nil, fmt.Errorf("pagemap: %w", err)
		}
		v := binary.LittleEndian.Uint64(e[:])
		pfn := v & (1<<55 - 1)
		if v>>63 == 0 || pfn == 0 {
			return nil, fmt.Errorf("pagemap: page %d not present or its frame hidden (entry %#x; not root?)", i, v)
		}
		a.pages = append(a.pages, &page{b: b, pa: pfn * pageSize})
	}
	return a, nil
}

// take hands out the next page.
func (a *arena) take() *page {
	if a.next == len(a.pages) {
		panic("hostile: arena exhausted")
	}
	p := a.pages[a.next]
	a.next++
	return p
}

// protect makes p read-only (ro) or writable again in this process's own
// page tables: what the device does with it does not change.
func protect(p *page, ro bool) error {
	prot := unix.PROT_READ | unix.PROT_WRITE
	if ro {
		prot = unix.PROT_READ
	}
	return unix.Mprotect(p.b, prot)
}
