package netstack

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// vnetHdrLen is the size of struct virtio_net_hdr_v1 the TAP device
// prepends to every frame (TUNSETVNETHDRSZ). With offloads off it is
// always zero on read and written as zeros.
const vnetHdrLen = 12

// maxTAPFrame is the largest frame a TAP endpoint reads or writes.
const maxTAPFrame = 65535

// TAP is a host TAP device opened with IFF_VNET_HDR and no offloads, used
// as a switch uplink: it is an Endpoint whose transmit side is the frames
// the host sends into the device and whose receive side writes frames to
// the host.
type TAP struct {
	name    string
	fd      int
	created bool
	rbuf    []byte
	wbuf    []byte
	pending int // length of a frame read by Arm and not yet handed over

	readErrors  atomic.Uint64
	writeErrors atomic.Uint64
	shortReads  atomic.Uint64
}

// OpenTAP opens the TAP device name, creating it if absent, with
// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, a 12-byte virtio-net header, every
// offload off (so the kernel never hands over GSO or partially
// checksummed frames) and a non-blocking fd, and sets the link up. Close
// removes the device only if OpenTAP created it.
func OpenTAP(name string) (*TAP, error) {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("open tap %q: bad interface name", name)
	}
	_, err := net.InterfaceByName(name)
	existed := err == nil
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open tap %s: open /dev/net/tun: %w", name, err)
	}
	t := &TAP{name: name, fd: fd, created: !existed,
		rbuf: make([]byte, vnetHdrLen+maxTAPFrame), wbuf: make([]byte, vnetHdrLen+maxTAPFrame)}
	if err := t.setup(); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("open tap %s: %w", name, err)
	}
	return t, nil
}

func (t *TAP) setup() error {
	ifr, err := unix.NewIfreq(t.name)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(t.fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("TUNSETIFF: %w (needs CAP_NET_ADMIN, or a tap owned by this user)", err)
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("TUNSETIFF: %w (an interface of that name exists and is not a free tap with vnet_hdr)", err)
		}
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	if err := unix.IoctlSetPointerInt(t.fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
		return fmt.Errorf("TUNSETVNETHDRSZ %d: %w", vnetHdrLen, err)
	}
	if err := unix.IoctlSetInt(t.fd, unix.TUNSETOFFLOAD, 0); err != nil {
		return fmt.Errorf("TUNSETOFFLOAD 0: %w", err)
	}
	if err := setLinkUp(t.name); err != nil {
		return err
	}
	return nil
}

// setLinkUp sets IFF_UP on the interface name.
func setLinkUp(name string) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("set link up: socket: %w", err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("set link up: %w", err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set link up: SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set link up: SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// Name returns the device's name.
func (t *TAP) Name() string { return t.name }

// Created reports whether OpenTAP created the device (and Close removes it).
func (t *TAP) Created() bool { return t.created }

// read reads one frame into rbuf and returns its length (without the
// header), 0 when nothing is queued.
func (t *TAP) read() int {
	for {
		n, err := unix.Read(t.fd, t.rbuf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0
		case err != nil:
			t.readErrors.Add(1)
			return 0
		case n <= vnetHdrLen:
			t.shortReads.Add(1)
			continue
		}
		return n - vnetHdrLen
	}
}

// Transmit implements Endpoint: it hands over frames the host sent into
// the device, without their virtio-net header.
func (t *TAP) Transmit(max int, fn func(frame []byte)) int {
	n := 0
	if t.pending > 0 && max > 0 {
		l := t.pending
		t.pending = 0
		fn(t.rbuf[vnetHdrLen : vnetHdrLen+l])
		n++
	}
	for ; n < max; n++ {
		l := t.read()
		if l == 0 {
			break
		}
		fn(t.rbuf[vnetHdrLen : vnetHdrLen+l])
	}
	return n
}

// Deliver implements Endpoint: it writes frame to the host behind a zero
// virtio-net header. It returns false if the write fails.
func (t *TAP) Deliver(frame []byte) bool {
	if len(frame) > maxTAPFrame {
		t.writeErrors.Add(1)
		return false
	}
	clear(t.wbuf[:vnetHdrLen])
	n := copy(t.wbuf[vnetHdrLen:], frame)
	for {
		_, err := unix.Write(t.fd, t.wbuf[:vnetHdrLen+n])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.writeErrors.Add(1)
			return false
		}
		return true
	}
}

// Flush implements Endpoint; TAP writes are immediate.
func (t *TAP) Flush() {}

// WaitFD implements Endpoint: the TAP fd, readable when the host sent a
// frame.
func (t *TAP) WaitFD() int { return t.fd }

// Arm implements Endpoint. A TAP fd always notifies; Arm reads ahead one
// frame so it can report one that arrived before the poller sleeps.
func (t *TAP) Arm() bool {
	if t.pending == 0 {
		t.pending = t.read()
	}
	return t.pending > 0
}

// Disarm implements Endpoint; nothing to suppress.
func (t *TAP) Disarm() {}

// TAPStats are a TAP endpoint's error counters.
type TAPStats struct {
	ReadErrors  uint64 `json:"read_errors"`
	WriteErrors uint64 `json:"write_errors"`
	ShortReads  uint64 `json:"short_reads"`
}

// Stats returns the TAP's error counters.
func (t *TAP) Stats() TAPStats {
	return TAPStats{ReadErrors: t.readErrors.Load(), WriteErrors: t.writeErrors.Load(),
		ShortReads: t.shortReads.Load()}
}

// Close closes the device's fd. A device OpenTAP created is removed (it
// is not persistent, so closing its last fd deletes it); one that existed
// before is left as it was. Take the port down (SetEndpoints) first.
func (t *TAP) Close() error {
	if t.fd < 0 {
		return nil
	}
	if t.created {
		// In case someone made it persistent meanwhile.
		_ = unix.IoctlSetInt(t.fd, unix.TUNSETPERSIST, 0)
	}
	err := unix.Close(t.fd)
	t.fd = -1
	if err != nil {
		return fmt.Errorf("close tap %s: %w", t.name, err)
	}
	return nil
}
