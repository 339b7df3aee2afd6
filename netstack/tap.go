package netstack

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/vnet"
)

// vnetHdrLen is the size of struct virtio_net_hdr_v1 the TAP device
// prepends to every frame (TUNSETVNETHDRSZ).
const vnetHdrLen = vnet.HeaderLen

// maxTAPFrame is the largest frame a TAP endpoint reads or writes.
const maxTAPFrame = vnet.MaxFrame

// tapOffloads are what the TAP asks the kernel to leave undone in the
// frames it reads (TUNSETOFFLOAD): checksums and TCP segmentation, which
// the switch passes on or finishes. ECN and UDP segmentation stay off.
const tapOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// TAP is a host TAP device opened with IFF_VNET_HDR and checksum and TSO
// offloads, used as a switch uplink: an OffloadEndpoint whose transmit
// side is the frames the host sends into the device and whose receive
// side writes frames to the host (which takes any offload it describes).
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
	badHeaders  atomic.Uint64
}

// OpenTAP opens the TAP device name, creating it if absent, with
// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, a 12-byte virtio-net header, checksum
// and TSO offloads on (tapOffloads) and a non-blocking fd, and sets the
// link up. Close removes the device only if OpenTAP created it.
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
	if err := unix.IoctlSetInt(t.fd, unix.TUNSETOFFLOAD, tapOffloads); err != nil {
		return fmt.Errorf("TUNSETOFFLOAD %#x: %w", tapOffloads, err)
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
// the device, with the offloads their virtio-net header leaves pending.
func (t *TAP) Transmit(max int, fn func(frame []byte, off vnet.Offload)) int {
	n := 0
	for n < max {
		l := t.pending
		t.pending = 0
		if l == 0 {
			if l = t.read(); l == 0 {
				break
			}
		}
		off, err := vnet.ParseHeader(t.rbuf[:vnetHdrLen], true, true)
		if err != nil {
			t.badHeaders.Add(1)
			continue
		}
		fn(t.rbuf[vnetHdrLen:vnetHdrLen+l], off)
		n++
	}
	return n
}

// Deliver implements Endpoint: it writes a complete frame to the host. It
// returns false if the write fails.
func (t *TAP) Deliver(frame []byte) bool { return t.DeliverOffload(frame, vnet.Offload{}) }

// AcceptsOffload implements OffloadEndpoint: the host's kernel finishes
// any checksum or TCP segmentation a written frame asks for.
func (t *TAP) AcceptsOffload(vnet.Offload) bool { return true }

// DeliverOffload implements OffloadEndpoint: it writes frame to the host
// behind a virtio-net header describing off.
func (t *TAP) DeliverOffload(frame []byte, off vnet.Offload) bool {
	if len(frame) > maxTAPFrame {
		t.writeErrors.Add(1)
		return false
	}
	vnet.PutHeader(t.wbuf[:vnetHdrLen], off)
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
	BadHeaders  uint64 `json:"bad_headers"`
}

// Stats returns the TAP's error counters.
func (t *TAP) Stats() TAPStats {
	return TAPStats{ReadErrors: t.readErrors.Load(), WriteErrors: t.writeErrors.Load(),
		ShortReads: t.shortReads.Load(), BadHeaders: t.badHeaders.Load()}
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
