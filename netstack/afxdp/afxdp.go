// Package afxdp is an AF_XDP uplink for colibri's bypass datapath: a
// Socket bound to one receive queue of a host interface, with an XDP
// program (built in Go with github.com/cilium/ebpf, no C) that redirects
// that queue's frames to it through an XSKMAP. A Socket is a
// netstack.Endpoint: Transmit yields the frames received from the wire,
// Deliver sends frames out of the interface.
//
// The UMEM is split in two: the first half of its frames only ever
// circulates through the fill and RX rings, the second half through the TX
// and completion rings, so the receive side (Transmit, Arm, Disarm) and the
// send side (Deliver, Flush) share no state and may run on different
// pollers. Everything the kernel writes into the rings (indices,
// addresses, lengths) is checked before use; bad entries are counted in
// Stats and skipped.
//
// Only one XDP program can be attached to an interface at a time, so only
// one Socket can be open per interface.
package afxdp

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/netstack"

	"github.com/colibrivm/colibri/internal/vnet"
)

var _ netstack.Endpoint = (*Socket)(nil)

// Defaults for Options' zero values.
const (
	DefaultNumFrames = 4096
	DefaultFrameSize = 2048
)

// ethHeaderLen is the length of an Ethernet header, the shortest frame
// Deliver accepts.
const ethHeaderLen = 14

// Options configure Open. The zero value is usable.
type Options struct {
	// QueueID is the interface receive/transmit queue to bind to (0 by
	// default).
	QueueID int
	// NumFrames is the number of UMEM frames, a power of two of at least
	// 16 (DefaultNumFrames if zero). Half receive, half send; each ring
	// has NumFrames/2 entries.
	NumFrames int
	// FrameSize is the size of a UMEM frame, a power of two from 2048 to
	// the page size (DefaultFrameSize if zero). It bounds the largest
	// frame Deliver accepts.
	FrameSize int
	// ZeroCopy asks for the fastest mode the driver has: the program in
	// driver (native) mode and the socket in zero-copy mode, falling back
	// to driver mode with copies, then to generic (SKB) mode with copies.
	// Without it the program is attached in generic mode, which every
	// interface supports.
	ZeroCopy bool
}

// AttachMode is where the XDP program runs.
type AttachMode int

const (
	// AttachGeneric runs the program in the kernel's generic (SKB) path.
	AttachGeneric AttachMode = iota + 1
	// AttachDriver runs the program in the driver's receive path.
	AttachDriver
)

// String returns "generic" or "driver".
func (m AttachMode) String() string {
	switch m {
	case AttachGeneric:
		return "generic"
	case AttachDriver:
		return "driver"
	}
	return fmt.Sprintf("AttachMode(%d)", int(m))
}

// Mode is how Open attached the program and bound the socket.
type Mode struct {
	// Attach is where the XDP program runs.
	Attach AttachMode
	// ZeroCopy is true when the socket was bound with XDP_ZEROCOPY,
	// false for XDP_COPY.
	ZeroCopy bool
	// NeedWakeup is true when the socket was bound with
	// XDP_USE_NEED_WAKEUP: the kernel is kicked only when it asks.
	NeedWakeup bool
}

// String describes the mode, e.g. "generic/copy" or "driver/zero-copy".
func (m Mode) String() string {
	s := m.Attach.String() + "/copy"
	if m.ZeroCopy {
		s = m.Attach.String() + "/zero-copy"
	}
	if m.NeedWakeup {
		s += "+need-wakeup"
	}
	return s
}

// Socket is an AF_XDP socket on one queue of one interface, with the XDP
// program that feeds it. It implements netstack.Endpoint; see there for
// which methods may run concurrently.
type Socket struct {
	ifname    string
	ifindex   int
	queue     int
	mode      Mode
	frameSize uint64
	nRx, nTx  uint32 // frames in the receive and the send half

	xsks *ebpf.Map
	prog *ebpf.Program
	lnk  link.Link
	umem []byte // mmapped, never the Go heap
	sock *xsk   // nil until bound

	// Receive side: owned by the poller calling Transmit.
	rx         rxRing
	fill       fillRing
	rxState    []frameState // per receive frame
	rxReturn   []uint64     // frames waiting to go back on the fill ring
	fillShadow []uint64     // what colibri wrote at each fill ring slot
	fillSeen   uint32       // fill ring index up to which rxState knows the kernel took frames

	// Send side: serialised by the port calling Deliver and Flush.
	tx         txRing
	comp       compRing
	txInFlight []bool   // per send frame: true while on the TX ring or in the kernel
	txFree     []uint64 // addresses of free send frames
	txQueued   uint32   // written to the TX ring since the last Flush

	stats  counters
	closed atomic.Bool
}

// Open creates an AF_XDP socket on queue opts.QueueID of ifname, attaches
// the redirect program to ifname and puts the socket in its XSKMAP. The
// returned Socket already has every receive frame on the fill ring.
func Open(ifname string, opts Options) (*Socket, error) {
	if opts.NumFrames == 0 {
		opts.NumFrames = DefaultNumFrames
	}
	if opts.FrameSize == 0 {
		opts.FrameSize = DefaultFrameSize
	}
	if err := checkOptions(opts); err != nil {
		return nil, fmt.Errorf("open AF_XDP socket on %s: %w", ifname, err)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("open AF_XDP socket on %s: %w", ifname, err)
	}

	half := uint32(opts.NumFrames / 2)
	s := &Socket{
		ifname:    ifname,
		ifindex:   ifi.Index,
		queue:     opts.QueueID,
		frameSize: uint64(opts.FrameSize),
		nRx:       half,
		nTx:       half,
	}
	if err := s.open(opts); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func checkOptions(opts Options) error {
	pow2 := func(n int) bool { return n > 0 && n&(n-1) == 0 }
	if opts.QueueID < 0 {
		return fmt.Errorf("queue id %d is negative", opts.QueueID)
	}
	if !pow2(opts.NumFrames) || opts.NumFrames < 16 {
		return fmt.Errorf("frame count %d is not a power of two of at least 16", opts.NumFrames)
	}
	if !pow2(opts.FrameSize) || opts.FrameSize < 2048 || opts.FrameSize > unix.Getpagesize() {
		return fmt.Errorf("frame size %d is not a power of two from 2048 to the page size (%d)", opts.FrameSize, unix.Getpagesize())
	}
	return nil
}

// attempt is one way of attaching and binding that Open tries.
type attempt struct {
	attach   AttachMode
	zeroCopy bool
}

func (s *Socket) open(opts Options) error {
	where := fmt.Sprintf("%s queue %d", s.ifname, s.queue)

	var err error
	umemLen := int(s.frameSize) * opts.NumFrames
	if s.umem, err = unix.Mmap(-1, 0, umemLen,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("allocate %d KiB of UMEM for %s: %w", umemLen>>10, where, err)
	}
	if s.xsks, err = newXSKMap(uint32(max(64, s.queue+1))); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if s.prog, err = newRedirectProgram(s.xsks); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}

	attempts := []attempt{{AttachGeneric, false}}
	if opts.ZeroCopy {
		attempts = []attempt{{AttachDriver, true}, {AttachDriver, false}, {AttachGeneric, false}}
	}
	var failures []string
	for _, a := range attempts {
		err := s.tryMode(a)
		if err == nil {
			break
		}
		failures = append(failures, fmt.Sprintf("%s/%s: %v", a.attach, copyName(a.zeroCopy), err))
	}
	if s.sock == nil {
		return fmt.Errorf("open AF_XDP socket on %s: %s", where, strings.Join(failures, "; "))
	}

	if err := s.xsks.Put(uint32(s.queue), uint32(s.sock.fd)); err != nil {
		return fmt.Errorf("put AF_XDP socket for %s in the XSKMAP: %w", where, err)
	}
	return nil
}

func copyName(zeroCopy bool) string {
	if zeroCopy {
		return "zero-copy"
	}
	return "copy"
}

// tryMode attaches the program as a asks (keeping an attachment in the
// same mode from an earlier attempt) and binds a fresh socket. On success
// s.sock, s.mode and the rings are set.
func (s *Socket) tryMode(a attempt) error {
	if s.lnk != nil && s.mode.Attach != a.attach {
		s.lnk.Close()
		s.lnk = nil
	}
	if s.lnk == nil {
		flags := link.XDPGenericMode
		if a.attach == AttachDriver {
			flags = link.XDPDriverMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: s.prog, Interface: s.ifindex, Flags: flags})
		if err != nil {
			return fmt.Errorf("attach XDP program: %w", err)
		}
		s.lnk = l
		s.mode.Attach = a.attach
	}

	bindFlags := uint16(unix.XDP_COPY)
	if a.zeroCopy {
		bindFlags = unix.XDP_ZEROCOPY
	}
	// Ask for need-wakeup first; kernels without it reject the flag.
	var errs []error
	for _, wakeup := range []bool{true, false} {
		flags := bindFlags
		if wakeup {
			flags |= unix.XDP_USE_NEED_WAKEUP
		}
		x, err := newXSK(s.umem, s.frameSize, s.nRx, s.nTx)
		if err != nil {
			return err
		}
		if err := bindXSK(x.fd, &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(s.ifindex), QueueID: uint32(s.queue)}); err != nil {
			x.close()
			errs = append(errs, fmt.Errorf("bind AF_XDP socket to %s queue %d (need-wakeup %v): %w", s.ifname, s.queue, wakeup, err))
			if !errors.Is(err, unix.EINVAL) {
				break
			}
			continue
		}
		s.sock = x
		s.mode.ZeroCopy = a.zeroCopy
		s.mode.NeedWakeup = wakeup
		s.rx, s.fill, s.tx, s.comp = x.rx, x.fill, x.tx, x.comp
		s.initFrames()
		return nil
	}
	return errors.Join(errs...)
}

// busyWait bounds how long bindXSK retries a queue another socket is
// still letting go of.
const busyWait = 2 * time.Second

// bindXSK binds an AF_XDP socket, retrying for a while on EBUSY: the
// kernel frees a closed socket's hold on its queue asynchronously, so a
// queue just closed can still be busy.
func bindXSK(fd int, sa *unix.SockaddrXDP) error {
	deadline := time.Now().Add(busyWait)
	for {
		err := unix.Bind(fd, sa)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// initFrames hands every receive frame to the kernel through the fill
// ring and puts every send frame on the free list.
func (s *Socket) initFrames() {
	s.rxState = make([]frameState, s.nRx)
	s.rxReturn = make([]uint64, 0, s.nRx)
	s.fillShadow = make([]uint64, s.fill.size)
	s.fillSeen = s.fill.cachedProd
	for i := range s.nRx {
		s.rxReturn = append(s.rxReturn, uint64(i)*s.frameSize)
	}
	s.refill()
	s.txInFlight = make([]bool, s.nTx)
	s.txFree = make([]uint64, 0, s.nTx)
	for i := range s.nTx {
		s.txFree = append(s.txFree, uint64(s.nRx+i)*s.frameSize)
	}
}

// Mode reports how the program was attached and the socket bound.
func (s *Socket) Mode() Mode { return s.mode }

// FD is the AF_XDP socket's file descriptor.
func (s *Socket) FD() int { return s.sock.fd }

// Transmit hands up to max frames received from the wire to fn, in order,
// then returns their frames to the fill ring. It returns how many frames
// fn saw; invalid descriptors are counted and skipped.
func (s *Socket) Transmit(max int, fn func(frame []byte, off vnet.Offload)) int {
	if max <= 0 {
		return 0
	}
	n, bad := s.rx.peek(uint32(min(max, int(s.rx.size))))
	if bad {
		s.stats.rxBadIndex.Add(1)
	}
	handed := 0
	var bytes uint64
	for i := range n {
		d := s.rx.descs[(s.rx.cachedCons+i)&s.rx.mask]
		frame, ok := s.rxFrame(d)
		if !ok {
			s.stats.rxInvalid.Add(1)
			continue
		}
		fn(frame, vnet.Offload{})
		handed++
		bytes += uint64(len(frame))
	}
	s.rx.release(n)
	s.refill()
	s.stats.rxPackets.Add(uint64(handed))
	s.stats.rxBytes.Add(bytes)
	return handed
}

// frameState is where a receive frame is.
type frameState uint8

const (
	frameOurs   frameState = iota // colibri's: being read, or waiting for the fill ring
	frameOnFill                   // on the fill ring, not yet taken by the kernel
	frameKernel                   // taken off the fill ring by the kernel
)

// rxFrame checks an RX descriptor and returns the frame it describes. Only
// a frame the kernel took off the fill ring can come back on the RX ring;
// such a frame returns to colibri (to be refilled) even when the rest of
// its descriptor is bad.
func (s *Socket) rxFrame(d unix.XDPDesc) ([]byte, bool) {
	idx := d.Addr / s.frameSize
	if idx >= uint64(s.nRx) {
		return nil, false
	}
	if s.rxState[idx] == frameOnFill {
		s.syncFill()
	}
	if s.rxState[idx] != frameKernel {
		return nil, false
	}
	s.rxState[idx] = frameOurs
	s.rxReturn = append(s.rxReturn, idx*s.frameSize)
	off := d.Addr % s.frameSize
	if d.Len == 0 || off+uint64(d.Len) > s.frameSize || d.Options != 0 {
		return nil, false
	}
	return s.umem[d.Addr : d.Addr+uint64(d.Len) : d.Addr+uint64(d.Len)], true
}

// syncFill marks the frames the kernel has taken off the fill ring since
// the last call, from colibri's own record of what it put there.
func (s *Socket) syncFill() {
	cons := atomic.LoadUint32(s.fill.consumer)
	if cons-s.fillSeen > s.fill.cachedProd-s.fillSeen {
		s.stats.fillBadIndex.Add(1)
		return
	}
	for ; s.fillSeen != cons; s.fillSeen++ {
		s.rxState[s.fillShadow[s.fillSeen&s.fill.mask]/s.frameSize] = frameKernel
	}
}

// refill puts the frames Transmit consumed back on the fill ring and
// wakes the kernel if it asked for that.
func (s *Socket) refill() {
	if len(s.rxReturn) == 0 {
		return
	}
	n, bad := s.fill.free(uint32(len(s.rxReturn)))
	if bad {
		s.stats.fillBadIndex.Add(1)
	}
	if n == 0 {
		return
	}
	for i, addr := range s.rxReturn[:n] {
		slot := (s.fill.cachedProd + uint32(i)) & s.fill.mask
		s.fill.addrs[slot] = addr
		s.fillShadow[slot] = addr
		s.rxState[addr/s.frameSize] = frameOnFill
	}
	s.fill.cachedProd += n
	s.fill.submit()
	s.rxReturn = append(s.rxReturn[:0], s.rxReturn[n:]...)
	if s.mode.NeedWakeup && s.fill.needWakeup() {
		s.stats.fillWakeups.Add(1)
		// recvfrom with nothing to read only wakes the driver.
		unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd()), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	}
}

// Deliver copies frame into a free send frame and puts it on the TX ring;
// Flush sends it. It returns false, counting the drop, when the frame is
// shorter than an Ethernet header or longer than a UMEM frame, or when no
// frame or ring slot is free.
func (s *Socket) Deliver(frame []byte) bool {
	if len(frame) < ethHeaderLen {
		s.stats.txRunt.Add(1)
		return false
	}
	if uint64(len(frame)) > s.frameSize {
		s.stats.txTooBig.Add(1)
		return false
	}
	if len(s.txFree) == 0 {
		s.reap()
		if len(s.txFree) == 0 {
			s.stats.txNoFrame.Add(1)
			return false
		}
	}
	n, bad := s.tx.free(1)
	if bad {
		s.stats.txBadIndex.Add(1)
	}
	if n == 0 {
		s.stats.txRingFull.Add(1)
		return false
	}
	addr := s.txFree[len(s.txFree)-1]
	s.txFree = s.txFree[:len(s.txFree)-1]
	s.txInFlight[addr/s.frameSize-uint64(s.nRx)] = true
	copy(s.umem[addr:addr+s.frameSize], frame)
	s.tx.descs[s.tx.cachedProd&s.tx.mask] = unix.XDPDesc{Addr: addr, Len: uint32(len(frame))}
	s.tx.cachedProd++
	s.txQueued++
	s.stats.txPackets.Add(1)
	s.stats.txBytes.Add(uint64(len(frame)))
	return true
}

// maxKicks bounds the sendto calls of one Flush. In copy mode each call
// sends at most the socket's TX budget (32 frames by default) and fails
// with EAGAIN while more are left.
func (s *Socket) maxKicks() int { return int(s.nTx)/32 + 4 }

// Flush publishes the frames delivered since the last Flush, kicks the
// kernel to send them (when it needs a kick) and reaps the completion
// ring.
func (s *Socket) Flush() {
	if s.txQueued > 0 {
		s.tx.submit()
		s.txQueued = 0
	}
	for range s.maxKicks() {
		left, bad := s.tx.outstanding()
		if bad {
			s.stats.txBadIndex.Add(1)
			break
		}
		if left == 0 || (s.mode.NeedWakeup && !s.tx.needWakeup()) {
			break
		}
		s.stats.txKicks.Add(1)
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd()), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		if e == 0 && s.mode.ZeroCopy {
			break // the driver sends asynchronously
		}
		if e == unix.EBUSY {
			// The completion ring is full: make room and retry.
			s.reap()
			continue
		}
		if e != 0 && e != unix.EAGAIN {
			s.stats.txKickErrors.Add(1)
			break
		}
	}
	s.reap()
}

// reap takes sent frames off the completion ring and frees them.
func (s *Socket) reap() {
	n, bad := s.comp.peek(s.comp.size)
	if bad {
		s.stats.compBadIndex.Add(1)
	}
	if n == 0 {
		return
	}
	done := 0
	for i := range n {
		addr := s.comp.addrs[(s.comp.cachedCons+i)&s.comp.mask]
		idx := addr / s.frameSize
		if addr%s.frameSize != 0 || idx < uint64(s.nRx) || idx >= uint64(s.nRx+s.nTx) || !s.txInFlight[idx-uint64(s.nRx)] {
			s.stats.compInvalid.Add(1)
			continue
		}
		s.txInFlight[idx-uint64(s.nRx)] = false
		s.txFree = append(s.txFree, addr)
		done++
	}
	s.comp.release(n)
	s.stats.txCompleted.Add(uint64(done))
}

// WaitFD is the AF_XDP socket: poll(2) reports it readable when the RX
// ring has frames.
func (s *Socket) WaitFD() int { return s.fd() }

// Arm reports whether the RX ring already has frames. The socket needs no
// re-arming: it is readable whenever the RX ring is not empty.
func (s *Socket) Arm() bool { return s.rx.pending() }

// Disarm does nothing: an AF_XDP socket sends no notifications the
// poller must suppress.
func (s *Socket) Disarm() {}

func (s *Socket) fd() int {
	if s.sock == nil {
		return -1
	}
	return s.sock.fd
}

// Stats returns the socket's counters, with the kernel's own read from the
// socket (zero once it is closed). It may be called from any goroutine
// while the Socket is open.
func (s *Socket) Stats() Stats {
	c := &s.stats
	st := Stats{
		Mode:             s.mode.String(),
		RxPackets:        c.rxPackets.Load(),
		RxBytes:          c.rxBytes.Load(),
		RxInvalidDescs:   c.rxInvalid.Load(),
		RxBadIndex:       c.rxBadIndex.Load(),
		FillBadIndex:     c.fillBadIndex.Load(),
		FillWakeups:      c.fillWakeups.Load(),
		TxPackets:        c.txPackets.Load(),
		TxBytes:          c.txBytes.Load(),
		TxCompleted:      c.txCompleted.Load(),
		TxDropTooBig:     c.txTooBig.Load(),
		TxDropRunt:       c.txRunt.Load(),
		TxDropNoFrame:    c.txNoFrame.Load(),
		TxDropRingFull:   c.txRingFull.Load(),
		TxBadIndex:       c.txBadIndex.Load(),
		TxKicks:          c.txKicks.Load(),
		TxKickErrors:     c.txKickErrors.Load(),
		CompInvalidDescs: c.compInvalid.Load(),
		CompBadIndex:     c.compBadIndex.Load(),
	}
	if !s.closed.Load() && s.sock != nil {
		st.Kernel, _ = kernelStats(s.sock.fd)
	}
	return st
}

// Close detaches the XDP program, closes the socket and the map, and
// unmaps the rings and the UMEM. The Socket must not be in use by any
// poller. Closing twice is harmless.
func (s *Socket) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	if s.lnk != nil {
		if err := s.lnk.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach XDP program from %s: %w", s.ifname, err))
		}
	}
	if s.prog != nil {
		if err := s.prog.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close XDP program: %w", err))
		}
	}
	if s.xsks != nil {
		if s.sock != nil {
			// Drop the map's reference to the socket now rather than
			// when the kernel gets round to freeing the map.
			if err := s.xsks.Delete(uint32(s.queue)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("remove AF_XDP socket from the XSKMAP: %w", err))
			}
		}
		if err := s.xsks.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close XSKMAP: %w", err))
		}
	}
	if s.sock != nil {
		if err := s.sock.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.umem != nil {
		if err := unix.Munmap(s.umem); err != nil {
			errs = append(errs, fmt.Errorf("unmap UMEM: %w", err))
		}
		s.umem = nil
	}
	return errors.Join(errs...)
}

// xsk is one AF_XDP socket with its UMEM registered and its four rings
// mapped, bound or not.
type xsk struct {
	fd               int
	rxMem, txMem     []byte
	fillMem, compMem []byte
	rx               rxRing
	tx               txRing
	fill             fillRing
	comp             compRing
}

// newXSK creates an AF_XDP socket, registers umem (nRx+nTx frames of
// frameSize bytes) with it and maps rings of nRx entries (RX, fill) and
// nTx entries (TX, completion).
func newXSK(umem []byte, frameSize uint64, nRx, nTx uint32) (*xsk, error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create AF_XDP socket: %w", err)
	}
	x := &xsk{fd: fd}
	if err := x.setup(umem, frameSize, nRx, nTx); err != nil {
		x.close()
		return nil, err
	}
	return x, nil
}

func (x *xsk) setup(umem []byte, frameSize uint64, nRx, nTx uint32) error {
	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(&umem[0]))),
		Len:  uint64(len(umem)),
		Size: uint32(frameSize),
	}
	if err := setsockopt(x.fd, unix.SOL_XDP, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return fmt.Errorf("register %d KiB UMEM with the AF_XDP socket (needs CAP_IPC_LOCK or RLIMIT_MEMLOCK room): %w", len(umem)>>10, err)
	}
	for _, r := range []struct {
		name string
		opt  int
		size uint32
	}{
		{"fill", unix.XDP_UMEM_FILL_RING, nRx},
		{"completion", unix.XDP_UMEM_COMPLETION_RING, nTx},
		{"RX", unix.XDP_RX_RING, nRx},
		{"TX", unix.XDP_TX_RING, nTx},
	} {
		if err := unix.SetsockoptInt(x.fd, unix.SOL_XDP, r.opt, int(r.size)); err != nil {
			return fmt.Errorf("size the AF_XDP %s ring to %d entries: %w", r.name, r.size, err)
		}
	}
	var off unix.XDPMmapOffsets
	size := uint32(unsafe.Sizeof(off))
	if err := getsockopt(x.fd, unix.SOL_XDP, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), &size); err != nil {
		return fmt.Errorf("get AF_XDP ring offsets: %w", err)
	}
	if size != uint32(unsafe.Sizeof(off)) {
		return fmt.Errorf("get AF_XDP ring offsets: kernel returned %d bytes, want %d (kernel too old)", size, unsafe.Sizeof(off))
	}

	var err error
	mmap := func(name string, pgoff int64, length int) ([]byte, error) {
		m, err := unix.Mmap(x.fd, pgoff, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("map AF_XDP %s ring: %w", name, err)
		}
		return m, nil
	}
	if x.fillMem, err = mmap("fill", unix.XDP_UMEM_PGOFF_FILL_RING, ringLen(off.Fr, nRx, addrSize)); err != nil {
		return err
	}
	if x.compMem, err = mmap("completion", unix.XDP_UMEM_PGOFF_COMPLETION_RING, ringLen(off.Cr, nTx, addrSize)); err != nil {
		return err
	}
	if x.rxMem, err = mmap("RX", unix.XDP_PGOFF_RX_RING, ringLen(off.Rx, nRx, descSize)); err != nil {
		return err
	}
	if x.txMem, err = mmap("TX", unix.XDP_PGOFF_TX_RING, ringLen(off.Tx, nTx, descSize)); err != nil {
		return err
	}
	x.fill = fillRing{prodRing{ringHeader: newRingHeader(x.fillMem, off.Fr, nRx)}, newAddrRing(x.fillMem, off.Fr, nRx)}
	x.comp = compRing{consRing{ringHeader: newRingHeader(x.compMem, off.Cr, nTx)}, newAddrRing(x.compMem, off.Cr, nTx)}
	x.rx = rxRing{consRing{ringHeader: newRingHeader(x.rxMem, off.Rx, nRx)}, newDescRing(x.rxMem, off.Rx, nRx)}
	x.tx = txRing{prodRing{ringHeader: newRingHeader(x.txMem, off.Tx, nTx)}, newDescRing(x.txMem, off.Tx, nTx)}
	// The kernel starts every index at zero; start the cached copies from
	// what it shows anyway.
	x.fill.cachedProd = *x.fill.producer
	x.fill.cachedCons = *x.fill.consumer
	x.tx.cachedProd = *x.tx.producer
	x.tx.cachedCons = *x.tx.consumer
	x.rx.cachedCons = *x.rx.consumer
	x.rx.cachedProd = x.rx.cachedCons
	x.comp.cachedCons = *x.comp.consumer
	x.comp.cachedProd = x.comp.cachedCons
	return nil
}

// close unmaps the rings and closes the socket.
func (x *xsk) close() error {
	var errs []error
	for _, m := range []*[]byte{&x.rxMem, &x.txMem, &x.fillMem, &x.compMem} {
		if *m != nil {
			if err := unix.Munmap(*m); err != nil {
				errs = append(errs, fmt.Errorf("unmap AF_XDP ring: %w", err))
			}
			*m = nil
		}
	}
	if x.fd >= 0 {
		if err := unix.Close(x.fd); err != nil {
			errs = append(errs, fmt.Errorf("close AF_XDP socket: %w", err))
		}
		x.fd = -1
	}
	return errors.Join(errs...)
}
