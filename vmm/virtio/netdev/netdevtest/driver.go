// Package netdevtest is a synthetic virtio-net driver: it lays out one
// receive/transmit queue pair in a region of guest memory, activates a
// netdev.Net on it and then sends and receives frames the way a guest's
// driver does (EVENT_IDX, kicks through an eventfd, interrupts counted).
// Tests and benchmarks use it to drive the device, and netstack's pollers
// through it, without KVM.
package netdevtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
)

// QueueSize is the size of both rings.
const QueueSize = 256

// Footprint returns the guest memory (whole pages) a driver with buffers of bufSize
// bytes occupies from its base address.
func Footprint(bufSize int) uint64 {
	return 2 * ringFootprint(bufSize)
}

func ringFootprint(bufSize int) uint64 {
	const page = 4096
	return (0x4000 + QueueSize*uint64(bufSize) + page - 1) &^ (page - 1)
}

// ring is the driver's side of one split virtqueue.
type ring struct {
	desc, avail, used []byte
	bufs              []byte
	bufAddr           uint64
	bufSize           uint32
	availIdx          uint16
	lastUsed          uint16
	free              []uint16 // descriptors not in the ring (transmit)
}

func newRing(mem *memory.Memory, base uint64, bufSize int) (*ring, virtq.Config, error) {
	cfg := virtq.Config{Size: QueueSize, DescAddr: base, AvailAddr: base + 0x1000, UsedAddr: base + 0x2000, EventIdx: true}
	r := &ring{bufAddr: base + 0x4000, bufSize: uint32(bufSize)}
	var err error
	if r.desc, err = mem.Slice(cfg.DescAddr, 16*QueueSize); err != nil {
		return nil, cfg, err
	}
	if r.avail, err = mem.Slice(cfg.AvailAddr, 6+2*QueueSize); err != nil {
		return nil, cfg, err
	}
	if r.used, err = mem.Slice(cfg.UsedAddr, 6+8*QueueSize); err != nil {
		return nil, cfg, err
	}
	if r.bufs, err = mem.Slice(r.bufAddr, QueueSize*uint64(bufSize)); err != nil {
		return nil, cfg, err
	}
	clear(r.desc)
	clear(r.avail)
	clear(r.used)
	return r, cfg, nil
}

func (r *ring) buf(id uint16) []byte {
	off := uint32(id) * r.bufSize
	return r.bufs[off : off+r.bufSize]
}

// setDesc points descriptor id at its buffer with length n and flags.
func (r *ring) setDesc(id uint16, n uint32, flags uint16) {
	d := r.desc[16*uint32(id):]
	binary.LittleEndian.PutUint64(d[0:], r.bufAddr+uint64(id)*uint64(r.bufSize))
	binary.LittleEndian.PutUint32(d[8:], n)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], 0)
}

// offer puts descriptor id in the available ring (published by publish).
func (r *ring) offer(id uint16) {
	binary.LittleEndian.PutUint16(r.avail[4+2*uint32(r.availIdx%QueueSize):], id)
	r.availIdx++
}

// publish makes the offered descriptors visible and reports whether the
// device asked for a kick (vring_need_event on avail_event).
func (r *ring) publish(old uint16) bool {
	memory.StoreUint16(r.avail[2:], r.availIdx)
	event := memory.LoadUint16(r.used[4+8*QueueSize:])
	return r.availIdx-event-1 < r.availIdx-old
}

// Driver drives one queue pair of a netdev.Net. It is not safe for
// concurrent use; the device side runs on whatever thread polls Pair.
type Driver struct {
	// Net is the device, Pair its only queue pair.
	Net  *netdev.Net
	Pair *netdev.QueuePair
	// Kicks counts transmit kicks written to the eventfd, RxKicks the
	// receive kicks (reposted buffers the device asked to hear about);
	// RxInterrupts and TxInterrupts count the interrupts the device raised.
	Kicks, RxKicks             atomic.Uint64
	RxInterrupts, TxInterrupts atomic.Uint64

	rx, tx   *ring
	kickFD   int
	rxKickFD int
	scratch  []byte
	// prepared is the length of the header and frame Prepare wrote;
	// descsPrepared says every transmit descriptor still points at its
	// whole prepared buffer (Send rewrites them).
	prepared      uint32
	descsPrepared bool
}

// NewPair makes guest memory holding two drivers (DefaultFeatures,
// addresses macA and macB, receive buffers of bufSize bytes), all released
// when tb ends.
func NewPair(tb testing.TB, bufSize int, macA, macB [6]byte) (a, b *Driver) {
	tb.Helper()
	fp := Footprint(bufSize)
	mem, err := memory.New(max(16<<20, 2*fp+1<<20), memory.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { mem.Close() })
	if a, err = New(mem, 0, bufSize, macA); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	if b, err = New(mem, fp, bufSize, macB); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return a, b
}

// DefaultFeatures are what New's driver negotiates: no offloads.
const DefaultFeatures = uint64(netdev.FeatureMAC | netdev.FeatureMrgRxBuf | virtio.FeatureEventIdx | virtio.FeatureVersion1)

// New lays out a driver at base in mem with receive buffers of bufSize
// bytes (mergeable: a frame larger than one buffer spans several), posts
// every receive buffer and activates a device with address mac,
// negotiating DefaultFeatures.
func New(mem *memory.Memory, base uint64, bufSize int, mac [6]byte) (*Driver, error) {
	return NewWithFeatures(mem, base, bufSize, mac, DefaultFeatures)
}

// NewWithFeatures is New negotiating features (e.g. DefaultFeatures plus
// offloads) instead.
func NewWithFeatures(mem *memory.Memory, base uint64, bufSize int, mac [6]byte, features uint64) (*Driver, error) {
	if bufSize < netdev.HeaderLen+netdev.MinFrame {
		return nil, fmt.Errorf("netdevtest: buffers of %d bytes are too small", bufSize)
	}
	d := &Driver{scratch: make([]byte, netdev.MaxFrame+netdev.HeaderLen)}
	rx, rxCfg, err := newRing(mem, base, bufSize)
	if err != nil {
		return nil, fmt.Errorf("netdevtest: receive ring: %w", err)
	}
	tx, txCfg, err := newRing(mem, base+ringFootprint(bufSize), bufSize)
	if err != nil {
		return nil, fmt.Errorf("netdevtest: transmit ring: %w", err)
	}
	d.rx, d.tx = rx, tx
	for id := uint16(0); id < QueueSize; id++ {
		rx.setDesc(id, rx.bufSize, 2) // VIRTQ_DESC_F_WRITE
		rx.offer(id)
		tx.free = append(tx.free, id)
	}
	rx.publish(0)
	// Interrupt after every used entry, like a driver with NAPI enabled.
	memory.StoreUint16(rx.avail[4+2*QueueSize:], 0)
	memory.StoreUint16(tx.avail[4+2*QueueSize:], 0)

	if d.kickFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("netdevtest: eventfd: %w", err)
	}
	if d.rxKickFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		unix.Close(d.kickFD)
		return nil, fmt.Errorf("netdevtest: eventfd: %w", err)
	}
	closeFDs := func() {
		unix.Close(d.kickFD)
		unix.Close(d.rxKickFD)
	}
	rxq, err := virtq.New(mem, rxCfg)
	if err != nil {
		closeFDs()
		return nil, err
	}
	txq, err := virtq.New(mem, txCfg)
	if err != nil {
		closeFDs()
		return nil, err
	}
	var attached []*netdev.QueuePair
	dev, err := netdev.New(netdev.Config{MAC: mac, Pairs: 1, Attach: func(p []*netdev.QueuePair) { attached = p }})
	if err != nil {
		closeFDs()
		return nil, err
	}
	broken := func(err error) { panic(fmt.Sprintf("netdevtest: device reported a broken ring: %v", err)) }
	queues := []*virtio.Queue{
		virtio.NewQueue(rxq, 0, func() { d.RxInterrupts.Add(1) }, broken).WithKickFD(d.rxKickFD),
		virtio.NewQueue(txq, 1, func() { d.TxInterrupts.Add(1) }, broken).WithKickFD(d.kickFD),
		nil,
	}
	if err := dev.Activate(features, queues); err != nil {
		closeFDs()
		return nil, err
	}
	d.Net, d.Pair = dev, attached[0]
	return d, nil
}

// KickFD is the eventfd the driver's transmit kicks write.
func (d *Driver) KickFD() int { return d.kickFD }

// Close resets the device and closes the kick eventfds.
func (d *Driver) Close() error {
	d.Net.Reset()
	return errors.Join(unix.Close(d.kickFD), unix.Close(d.rxKickFD))
}

// rxKick kicks the receive queue, as a driver does after reposting
// buffers when the device asked for it.
func (d *Driver) rxKick() {
	d.RxKicks.Add(1)
	unix.Write(d.rxKickFD, []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

// reclaim returns transmit descriptors the device has used.
func (d *Driver) reclaim() {
	r := d.tx
	used := memory.LoadUint16(r.used[2:])
	for ; r.lastUsed != used; r.lastUsed++ {
		e := r.used[4+8*uint32(r.lastUsed%QueueSize):]
		r.free = append(r.free, uint16(binary.LittleEndian.Uint32(e)))
	}
	memory.StoreUint16(r.avail[4+2*QueueSize:], r.lastUsed)
}

// Send queues frames (header and frame in one buffer, as Linux does) and
// kicks the device if it asked for kicks. It returns how many it queued:
// fewer when the transmit ring is full.
func (d *Driver) Send(frames ...[]byte) int {
	r := d.tx
	if len(r.free) < len(frames) {
		d.reclaim()
	}
	old := r.availIdx
	n := 0
	for _, f := range frames {
		if len(r.free) == 0 || len(f)+netdev.HeaderLen > int(r.bufSize) {
			break
		}
		id := r.free[len(r.free)-1]
		r.free = r.free[:len(r.free)-1]
		b := r.buf(id)
		clear(b[:netdev.HeaderLen])
		copy(b[netdev.HeaderLen:], f)
		r.setDesc(id, uint32(netdev.HeaderLen+len(f)), 0)
		r.offer(id)
		n++
	}
	if n > 0 {
		d.descsPrepared = false
	}
	if n > 0 && r.publish(old) {
		d.Kicks.Add(1)
		unix.Write(d.kickFD, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
	return n
}

// Receive hands every frame the device has delivered to fn (valid only
// during the call), reposts the buffers and returns how many frames it
// saw.
func (d *Driver) Receive(fn func(frame []byte)) int {
	return d.ReceiveWithHeader(func(_, frame []byte) { fn(frame) })
}

// ReceiveWithHeader is Receive handing over each frame's virtio-net
// header too.
func (d *Driver) ReceiveWithHeader(fn func(hdr, frame []byte)) int {
	r := d.rx
	used := memory.LoadUint16(r.used[2:])
	old := r.availIdx
	frames := 0
	for r.lastUsed != used {
		e := r.used[4+8*uint32(r.lastUsed%QueueSize):]
		id := uint16(binary.LittleEndian.Uint32(e))
		n := binary.LittleEndian.Uint32(e[4:])
		b := r.buf(id)[:min(n, r.bufSize)]
		count := uint16(1)
		if len(b) >= netdev.HeaderLen {
			count = max(binary.LittleEndian.Uint16(b[10:]), 1)
		}
		if count > used-r.lastUsed {
			break // the rest of this frame is not published yet
		}
		frame := d.scratch[:0]
		for i := uint16(0); i < count; i++ {
			e := r.used[4+8*uint32(r.lastUsed%QueueSize):]
			id := uint16(binary.LittleEndian.Uint32(e))
			n := binary.LittleEndian.Uint32(e[4:])
			frame = append(frame, r.buf(id)[:min(n, r.bufSize)]...)
			r.offer(id)
			r.lastUsed++
		}
		if len(frame) >= netdev.HeaderLen {
			fn(frame[:netdev.HeaderLen], frame[netdev.HeaderLen:])
		}
		frames++
	}
	memory.StoreUint16(r.avail[4+2*QueueSize:], r.lastUsed)
	if r.availIdx != old && r.publish(old) {
		d.rxKick()
	}
	return frames
}

// Prepare writes frame, behind a zeroed virtio-net header, into every
// transmit buffer once, and points every transmit descriptor at it, so
// that SendPrepared can queue it by its descriptor's index alone (the
// device only reads descriptors: one that still describes the prepared
// buffer need not be written again): the cheapest driver a benchmark of
// the device side can have. No frame may be in flight.
func (d *Driver) Prepare(frame []byte) error {
	r := d.tx
	if len(frame)+netdev.HeaderLen > int(r.bufSize) {
		return fmt.Errorf("netdevtest: a %d-byte frame does not fit %d-byte buffers", len(frame), r.bufSize)
	}
	for id := uint16(0); id < QueueSize; id++ {
		b := r.buf(id)
		clear(b[:netdev.HeaderLen])
		copy(b[netdev.HeaderLen:], frame)
	}
	d.prepared = uint32(netdev.HeaderLen + len(frame))
	for id := uint16(0); id < QueueSize; id++ {
		r.setDesc(id, d.prepared, 0)
	}
	d.descsPrepared = true
	return nil
}

// SendPrepared queues up to n copies of the frame given to Prepare (as
// Send would, kicking if the device asked) and returns how many it
// queued: fewer when the transmit ring is full.
func (d *Driver) SendPrepared(n int) int {
	r := d.tx
	if len(r.free) < n {
		d.reclaim()
	}
	old := r.availIdx
	k := min(n, len(r.free))
	for range k {
		id := r.free[len(r.free)-1]
		r.free = r.free[:len(r.free)-1]
		if !d.descsPrepared { // Send used it: point it back
			r.setDesc(id, d.prepared, 0)
		}
		r.offer(id)
	}
	if k > 0 && r.publish(old) {
		d.Kicks.Add(1)
		unix.Write(d.kickFD, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
	return k
}

// DiscardSingles is Receive for a benchmark that only counts frames known
// to fit one receive buffer each (with its header): it reposts used
// buffers without reading them at all, so the receiving side costs the device's core no
// cache line it wrote.
func (d *Driver) DiscardSingles() int {
	r := d.rx
	used := memory.LoadUint16(r.used[2:])
	n := int(used - r.lastUsed)
	if n == 0 {
		return 0
	}
	old := r.availIdx
	for ; r.lastUsed != used; r.lastUsed++ {
		e := r.used[4+8*uint32(r.lastUsed%QueueSize):]
		r.offer(uint16(binary.LittleEndian.Uint32(e)))
	}
	memory.StoreUint16(r.avail[4+2*QueueSize:], r.lastUsed)
	if r.publish(old) {
		d.rxKick()
	}
	return n
}
