// Package memory owns a guest's physical memory: one memfd-backed shared
// mapping, laid out around the 32-bit MMIO hole, with bounds-checked
// accessors that every device uses to touch guest addresses.
//
// Guest memory is untrusted input: every address and length a guest hands to
// the VMM goes through Slice (or a helper built on it), which refuses any
// range that is not wholly inside one RAM region.
package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The guest physical address map. RAM starts at 0; whatever does not fit
// below MMIOHoleStart continues at 4 GiB.
const (
	// MMIOHoleStart is where the 32-bit MMIO window (PCI BARs, LAPIC, IOAPIC)
	// begins.
	MMIOHoleStart uint64 = 0xC000_0000
	// MMIOHoleEnd is the end of the 32-bit MMIO window (4 GiB).
	MMIOHoleEnd uint64 = 1 << 32

	// MinSize is the smallest guest memory colibri accepts.
	MinSize uint64 = 16 << 20
	// MaxSize is the largest guest memory colibri accepts (1 TiB).
	MaxSize uint64 = 1 << 40
)

// ErrOutOfBounds is wrapped by every error about an address range that is not
// guest RAM.
var ErrOutOfBounds = errors.New("guest address range outside guest memory")

// Region is one contiguous range of guest RAM.
type Region struct {
	// GuestAddr is the guest physical address of the first byte.
	GuestAddr uint64
	// Size is the length in bytes.
	Size uint64
	// Offset is where the region starts inside the memfd and the host mapping.
	Offset uint64
}

// End returns the first guest address after the region.
func (r Region) End() uint64 { return r.GuestAddr + r.Size }

// Options tune how guest memory is backed.
type Options struct {
	// HugePages backs the memory with 2 MiB huge pages (hugetlbfs through
	// memfd). The size must be a multiple of 2 MiB. Without it the memory
	// is madvised for transparent huge pages, which the host gives shared
	// memory only if transparent_hugepage/shmem_enabled allows it.
	HugePages bool
}

// Memory is a guest's physical memory.
type Memory struct {
	fd      int
	host    []byte
	regions []Region
}

// New creates size bytes of guest memory.
func New(size uint64, opts Options) (*Memory, error) {
	if size < MinSize {
		return nil, fmt.Errorf("guest memory %d MiB is too small: need at least %d MiB", size>>20, MinSize>>20)
	}
	if size > MaxSize {
		return nil, fmt.Errorf("guest memory %d GiB is too large: at most %d GiB", size>>30, MaxSize>>30)
	}
	if size%uint64(unix.Getpagesize()) != 0 {
		return nil, fmt.Errorf("guest memory size %d is not a multiple of the page size", size)
	}
	flags := unix.MFD_CLOEXEC
	if opts.HugePages {
		if size%(2<<20) != 0 {
			return nil, fmt.Errorf("guest memory size %d is not a multiple of 2 MiB, needed for huge pages", size)
		}
		flags |= unix.MFD_HUGETLB | unix.MFD_HUGE_2MB
	}
	fd, err := unix.MemfdCreate("colibri-guest-ram", flags)
	if err != nil {
		return nil, fmt.Errorf("memfd_create for guest memory: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sizing guest memory to %d MiB: %w", size>>20, err)
	}
	// Huge pages are reserved when mapped (no MAP_NORESERVE): a host
	// without enough of them refuses the VM now, instead of killing it
	// with SIGBUS the first time the guest touches a page the pool lacks.
	mapFlags := unix.MAP_SHARED
	if !opts.HugePages {
		mapFlags |= unix.MAP_NORESERVE
	}
	host, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, mapFlags)
	if err != nil {
		unix.Close(fd)
		if opts.HugePages {
			return nil, fmt.Errorf("mapping %d MiB of huge pages (not enough free 2 MiB pages: see /proc/sys/vm/nr_hugepages and HugePages_Free in /proc/meminfo): %w", size>>20, err)
		}
		return nil, fmt.Errorf("mapping %d MiB of guest memory: %w", size>>20, err)
	}
	// Guest memory is the tenant's, not the VMM's: it stays out of a core
	// dump of colibri.
	if err := unix.Madvise(host, unix.MADV_DONTDUMP); err != nil {
		unix.Munmap(host)
		unix.Close(fd)
		return nil, fmt.Errorf("keeping guest memory out of core dumps (MADV_DONTDUMP): %w", err)
	}
	if !opts.HugePages {
		// Transparent huge pages where the host allows them for shared
		// memory (transparent_hugepage/shmem_enabled "advise" or
		// "always"): one nested page fault per 2 MiB the guest first
		// touches instead of 512. Refused (shmem_enabled "never", the
		// usual default) it changes nothing, so the error is ignored.
		_ = unix.Madvise(host, unix.MADV_HUGEPAGE)
	}
	return &Memory{fd: fd, host: host, regions: layout(size)}, nil
}

// layout splits size bytes of RAM around the MMIO hole.
func layout(size uint64) []Region {
	if size <= MMIOHoleStart {
		return []Region{{GuestAddr: 0, Size: size}}
	}
	return []Region{
		{GuestAddr: 0, Size: MMIOHoleStart},
		{GuestAddr: MMIOHoleEnd, Size: size - MMIOHoleStart, Offset: MMIOHoleStart},
	}
}

// Close unmaps the memory and closes the memfd.
func (m *Memory) Close() error {
	if m.host == nil {
		return nil
	}
	err := unix.Munmap(m.host)
	m.host = nil
	if cerr := unix.Close(m.fd); err == nil {
		err = cerr
	}
	return err
}

// Size returns the amount of guest RAM in bytes.
func (m *Memory) Size() uint64 { return uint64(len(m.host)) }

// Regions returns the RAM regions in ascending guest address order.
func (m *Memory) Regions() []Region { return append([]Region(nil), m.regions...) }

// FD returns the memfd that backs the memory, so another process can map it.
func (m *Memory) FD() int { return m.fd }

// HostAddr returns the host virtual address of a region's first byte, for
// KVM_SET_USER_MEMORY_REGION.
func (m *Memory) HostAddr(r Region) uintptr {
	return uintptr(unsafe.Pointer(&m.host[r.Offset]))
}

// Host returns the whole host mapping. It is meant for accounting (mincore)
// and for tests; devices use Slice.
func (m *Memory) Host() []byte { return m.host }

// Slice returns the n bytes of guest memory at gpa, aliasing guest memory.
// The range must lie wholly inside one RAM region.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	for _, r := range m.regions {
		if gpa >= r.GuestAddr && gpa-r.GuestAddr < r.Size {
			off := gpa - r.GuestAddr
			if n > r.Size-off {
				break
			}
			start := r.Offset + off
			return m.host[start : start+n : start+n], nil
		}
	}
	return nil, fmt.Errorf("%w: [%#x, +%#x)", ErrOutOfBounds, gpa, n)
}

// Contains reports whether [gpa, gpa+n) is wholly guest RAM.
func (m *Memory) Contains(gpa, n uint64) bool {
	_, err := m.Slice(gpa, n)
	return err == nil
}

// Read copies len(p) bytes from guest address gpa into p.
func (m *Memory) Read(gpa uint64, p []byte) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// Write copies p into guest memory at gpa.
func (m *Memory) Write(gpa uint64, p []byte) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}

// Uint16 reads a little-endian uint16 at gpa.
func (m *Memory) Uint16(gpa uint64) (uint16, error) {
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s), nil
}

// Uint32 reads a little-endian uint32 at gpa.
func (m *Memory) Uint32(gpa uint64) (uint32, error) {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(s), nil
}

// Uint64 reads a little-endian uint64 at gpa.
func (m *Memory) Uint64(gpa uint64) (uint64, error) {
	s, err := m.Slice(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(s), nil
}

// PutUint16 writes a little-endian uint16 at gpa.
func (m *Memory) PutUint16(gpa uint64, v uint16) error {
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(s, v)
	return nil
}

// PutUint32 writes a little-endian uint32 at gpa.
func (m *Memory) PutUint32(gpa uint64, v uint32) error {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(s, v)
	return nil
}

// PutUint64 writes a little-endian uint64 at gpa.
func (m *Memory) PutUint64(gpa uint64, v uint64) error {
	s, err := m.Slice(gpa, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(s, v)
	return nil
}

// LoadUint16 atomically loads a naturally aligned uint16 that the guest may
// be writing concurrently (ring indices). b must come from Slice and be at
// least 2 bytes long and 2-byte aligned.
func LoadUint16(b []byte) uint16 {
	_ = b[1]
	p := unsafe.Pointer(&b[0])
	if uintptr(p)%4 == 0 {
		return uint16(atomic.LoadUint32((*uint32)(p)))
	}
	// 2 mod 4: load the aligned word that ends with these two bytes.
	w := atomic.LoadUint32((*uint32)(unsafe.Add(p, -2)))
	return uint16(w >> 16)
}

// StoreUint16 stores a naturally aligned uint16 that the guest may be reading
// concurrently (ring indices), with release semantics on amd64, followed by
// a full fence (StoreUint16Ordered, then Fence).
func StoreUint16(b []byte, v uint16) {
	StoreUint16Ordered(b, v)
	Fence()
}

// StoreUint16Ordered stores a naturally aligned uint16 that the guest may be
// reading concurrently, after every store the caller made before it (x86
// keeps stores in program order, and the compiler does not move stores
// across one another): a release store, with no locked instruction. A later
// load may still pass it (the store buffer): call Fence between the two
// where the load must see what the guest wrote after seeing this store
// (the used index, then used_event).
func StoreUint16Ordered(b []byte, v uint16) {
	_ = b[1]
	*(*uint16)(unsafe.Pointer(&b[0])) = v
}

// Fence is a full memory barrier: every store before it is visible before
// any load after it. On amd64 it is one locked instruction (an atomic add
// to a private word).
func Fence() {
	var fence uint32
	atomic.AddUint32(&fence, 0)
}
