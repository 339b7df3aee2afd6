package afxdp

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The four AF_XDP rings are single-producer, single-consumer queues in
// memory shared with the kernel. Each side keeps a private copy of the
// other side's index (refreshed only when it runs out) and publishes its
// own index with an atomic store after the descriptors it covers are
// written or read. Go's atomics are sequentially consistent, which is at
// least the acquire/release ordering the kernel's side expects
// (smp_load_acquire/smp_store_release on the indices).
//
// Indices read from the kernel are not trusted: a producer index more
// than a ring's size ahead of the consumer, or a consumer index ahead of
// the producer, is counted and clamped instead of being used.

// ringHeader is the part every ring shares: the two indices, the flags
// word and the size.
type ringHeader struct {
	producer *uint32
	consumer *uint32
	flags    *uint32
	mask     uint32
	size     uint32
}

func newRingHeader(mem []byte, off unix.XDPRingOffset, size uint32) ringHeader {
	return ringHeader{
		producer: (*uint32)(unsafe.Pointer(&mem[off.Producer])),
		consumer: (*uint32)(unsafe.Pointer(&mem[off.Consumer])),
		flags:    (*uint32)(unsafe.Pointer(&mem[off.Flags])),
		mask:     size - 1,
		size:     size,
	}
}

// needWakeup reports whether the kernel set XDP_RING_NEED_WAKEUP.
func (h *ringHeader) needWakeup() bool {
	return atomic.LoadUint32(h.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}

// consRing is the consumer's view of a ring the kernel produces (RX,
// completion).
type consRing struct {
	ringHeader
	cachedProd uint32
	cachedCons uint32
}

// peek returns how many entries, at most max, are ready at cachedCons.
// bad is set when the kernel's producer index is impossible; the count is
// then clamped to the ring's size.
func (r *consRing) peek(max uint32) (n uint32, bad bool) {
	avail := r.cachedProd - r.cachedCons
	if avail < max {
		r.cachedProd = atomic.LoadUint32(r.producer)
		avail = r.cachedProd - r.cachedCons
		if avail > r.size {
			bad = true
			avail = r.size
			r.cachedProd = r.cachedCons + r.size
		}
	}
	return min(avail, max), bad
}

// pending reports whether entries are ready without consuming any.
func (r *consRing) pending() bool {
	return atomic.LoadUint32(r.producer) != r.cachedCons
}

// release hands n consumed entries back to the kernel.
func (r *consRing) release(n uint32) {
	if n == 0 {
		return
	}
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons)
}

// prodRing is the producer's view of a ring the kernel consumes (fill,
// TX).
type prodRing struct {
	ringHeader
	cachedProd uint32 // next index to write; published by submit
	cachedCons uint32
}

// free returns how many entries, at most want, can be written now. bad is
// set when the kernel's consumer index is impossible; no room is
// reported then.
func (r *prodRing) free(want uint32) (n uint32, bad bool) {
	used := r.cachedProd - r.cachedCons
	if r.size-used < want {
		cons := atomic.LoadUint32(r.consumer)
		if r.cachedProd-cons > r.size {
			return 0, true
		}
		r.cachedCons = cons
		used = r.cachedProd - cons
	}
	return min(r.size-used, want), false
}

// outstanding returns how many published entries the kernel has not
// consumed yet, or bad if its consumer index is impossible.
func (r *prodRing) outstanding() (n uint32, bad bool) {
	cons := atomic.LoadUint32(r.consumer)
	n = atomic.LoadUint32(r.producer) - cons
	if n > r.size {
		return 0, true
	}
	return n, false
}

// submit publishes every entry written so far.
func (r *prodRing) submit() {
	atomic.StoreUint32(r.producer, r.cachedProd)
}

// descRing is an RX or TX ring of struct xdp_desc.
type descRing struct {
	descs []unix.XDPDesc
}

func newDescRing(mem []byte, off unix.XDPRingOffset, size uint32) descRing {
	return descRing{descs: unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&mem[off.Desc])), size)}
}

// addrRing is a fill or completion ring of u64 UMEM addresses.
type addrRing struct {
	addrs []uint64
}

func newAddrRing(mem []byte, off unix.XDPRingOffset, size uint32) addrRing {
	return addrRing{addrs: unsafe.Slice((*uint64)(unsafe.Pointer(&mem[off.Desc])), size)}
}

// rxRing is the RX ring: the kernel produces received frames.
type rxRing struct {
	consRing
	descRing
}

// txRing is the TX ring: we produce frames to send.
type txRing struct {
	prodRing
	descRing
}

// fillRing is the fill ring: we produce free frames for the kernel to
// receive into.
type fillRing struct {
	prodRing
	addrRing
}

// compRing is the completion ring: the kernel produces sent frames.
type compRing struct {
	consRing
	addrRing
}

// ringLen is the number of bytes to map for a ring of size entries of
// entrySize bytes whose descriptors start at off.Desc.
func ringLen(off unix.XDPRingOffset, size uint32, entrySize uintptr) int {
	return int(off.Desc) + int(size)*int(entrySize)
}

const (
	descSize = unsafe.Sizeof(unix.XDPDesc{})
	addrSize = unsafe.Sizeof(uint64(0))
)
