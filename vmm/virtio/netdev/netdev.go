// Package netdev is colibri's virtio-net device (virtio 1.2, section 5.1):
// multi-queue, mergeable receive buffers, link status and a control queue.
// Its data queues are not served by the transport's worker goroutines: each
// receive/transmit pair is a QueuePair that a netstack poller drives
// straight from guest memory (the methods match netstack.Endpoint), handed
// over through the Attach callback whenever the driver brings queues up or
// down. The control queue is served by the transport as usual.
//
// Checksum and TCP segmentation offloads are offered both ways (unless
// Config.NoOffloads): a frame's pending offloads travel with it (see
// internal/vnet), the switch finishes them in software for a port that
// cannot take them, and the device writes them into the receive header only
// for a driver that negotiated them.
package netdev

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/colibrivm/colibri/internal/vnet"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
)

// Feature bits (virtio 1.2, 5.1.3).
const (
	FeatureCsum      = 1 << 0
	FeatureGuestCsum = 1 << 1
	FeatureGuestTSO4 = 1 << 7
	FeatureGuestTSO6 = 1 << 8
	FeatureHostTSO4  = 1 << 11
	FeatureHostTSO6  = 1 << 12
	FeatureMAC       = 1 << 5
	FeatureMrgRxBuf  = 1 << 15
	FeatureStatus    = 1 << 16
	FeatureCtrlVQ    = 1 << 17
	FeatureMQ        = 1 << 22
)

const (
	// HeaderLen is the size of struct virtio_net_hdr with VERSION_1.
	HeaderLen = vnet.HeaderLen
	// MaxFrame is the largest Ethernet frame (without the virtio header)
	// the device passes: a 64 KiB TSO frame with its headers.
	MaxFrame = vnet.MaxFrame
	// MinFrame is the Ethernet header: shorter frames are dropped.
	MinFrame = 14
	// MaxPairs is the most queue pairs a device offers (the MQ limit).
	MaxPairs = 256

	dataQueueSize = 256
	ctrlQueueSize = 64
	statusLinkUp  = 1
)

// Control queue (5.1.6.5).
const (
	ctrlClassMQ     = 4
	ctrlMQPairsSet  = 0
	ctrlAckOK       = 0
	ctrlAckErr      = 1
	ctrlHeaderBytes = 2
)

// Config describes one NIC.
type Config struct {
	// MAC is the address the guest is given.
	MAC [6]byte
	// Pairs is the number of receive/transmit queue pairs (1..MaxPairs).
	Pairs int
	// NoOffloads withholds the checksum and TSO features, so the driver
	// sends and expects complete MTU-sized frames.
	NoOffloads bool
	// Attach is called with the queue pairs the driver is using, every
	// time that set changes: on DRIVER_OK (the first pair), when the
	// driver asks for more pairs over the control queue, and with nil on
	// reset. It must not return while anything still uses pairs it was
	// given before: the queues are freed after it returns. It runs on a
	// vCPU thread or the control queue's worker.
	Attach func(pairs []*QueuePair)
}

// Stats counts what the guest sent that the device refused.
type Stats struct {
	// TxMalformed counts transmit chains dropped: no header, a writable
	// buffer, a frame shorter than MinFrame or longer than MaxFrame, an
	// offload request the device does not offer or that does not fit the
	// frame.
	TxMalformed atomic.Uint64
	// RxTooBig counts frames that no receive buffer could hold (without
	// mergeable buffers, a frame larger than the driver's buffers).
	RxTooBig atomic.Uint64
	// CtrlErrors counts control commands answered with an error.
	CtrlErrors atomic.Uint64
	// Kicks counts the driver's transmit notifications, read when one
	// wakes the poller or the poller finds one as it goes to sleep (while
	// it polls, the driver is told not to kick).
	Kicks atomic.Uint64
	// RxInterrupts and TxInterrupts count the interrupts the device sent
	// for received frames and for completed transmissions.
	RxInterrupts, TxInterrupts atomic.Uint64
}

// StatsSnapshot is Stats read at one moment.
type StatsSnapshot struct {
	MAC          string `json:"mac"`
	TxMalformed  uint64 `json:"tx_malformed"`
	RxTooBig     uint64 `json:"rx_too_big"`
	CtrlErrors   uint64 `json:"ctrl_errors"`
	Kicks        uint64 `json:"kicks"`
	RxInterrupts uint64 `json:"rx_interrupts"`
	TxInterrupts uint64 `json:"tx_interrupts"`
}

// Snapshot reads the device's counters.
func (n *Net) Snapshot() StatsSnapshot {
	s := &n.Stats
	return StatsSnapshot{MAC: FormatMAC(n.cfg.MAC), TxMalformed: s.TxMalformed.Load(), RxTooBig: s.RxTooBig.Load(),
		CtrlErrors: s.CtrlErrors.Load(), Kicks: s.Kicks.Load(), RxInterrupts: s.RxInterrupts.Load(), TxInterrupts: s.TxInterrupts.Load()}
}

// Net is a virtio-net device.
type Net struct {
	cfg Config
	// Stats are updated by the pollers and the control worker.
	Stats Stats

	mu        sync.Mutex
	pairs     []*QueuePair // all pairs the driver enabled, by pair index
	active    int
	mergeable bool
	offloads  offloads
	ctrl      virtq.Chain
}

// New checks cfg and returns the device.
func New(cfg Config) (*Net, error) {
	if cfg.Pairs < 1 || cfg.Pairs > MaxPairs {
		return nil, fmt.Errorf("virtio-net: %d queue pairs (want 1..%d)", cfg.Pairs, MaxPairs)
	}
	if cfg.MAC[0]&1 != 0 {
		return nil, fmt.Errorf("virtio-net: MAC %s is a multicast address", FormatMAC(cfg.MAC))
	}
	if cfg.Attach == nil {
		cfg.Attach = func([]*QueuePair) {}
	}
	return &Net{cfg: cfg}, nil
}

// FormatMAC prints a MAC address the usual way.
func FormatMAC(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// MAC returns the guest's address.
func (n *Net) MAC() [6]byte { return n.cfg.MAC }

// Type implements virtio.Device.
func (n *Net) Type() uint16 { return virtio.TypeNet }

// Features implements virtio.Device.
func (n *Net) Features() uint64 {
	f := uint64(FeatureMAC | FeatureMrgRxBuf | FeatureStatus | FeatureCtrlVQ)
	if n.cfg.Pairs > 1 {
		f |= FeatureMQ
	}
	if !n.cfg.NoOffloads {
		f |= FeatureCsum | FeatureGuestCsum | FeatureHostTSO4 | FeatureHostTSO6 | FeatureGuestTSO4 | FeatureGuestTSO6
	}
	return f
}

// QueueSizes implements virtio.Device: receiveq1, transmitq1, …,
// receiveqN, transmitqN, then the control queue.
func (n *Net) QueueSizes() []uint16 {
	sizes := make([]uint16, 2*n.cfg.Pairs+1)
	for i := range sizes {
		sizes[i] = dataQueueSize
	}
	sizes[len(sizes)-1] = ctrlQueueSize
	return sizes
}

// ServesQueue implements virtio.SelfServer: the data queues belong to the
// pollers; only the control queue is left to the transport.
func (n *Net) ServesQueue(i int) bool { return i < 2*n.cfg.Pairs }

// ReadConfig implements virtio.Device: mac, status, max_virtqueue_pairs.
func (n *Net) ReadConfig(off uint64, data []byte) {
	var cfg [10]byte
	copy(cfg[0:6], n.cfg.MAC[:])
	binary.LittleEndian.PutUint16(cfg[6:], statusLinkUp)
	binary.LittleEndian.PutUint16(cfg[8:], uint16(n.cfg.Pairs))
	for i := range data {
		data[i] = 0
		if off+uint64(i) < uint64(len(cfg)) {
			data[i] = cfg[off+uint64(i)]
		}
	}
}

// WriteConfig implements virtio.Device: the configuration is read-only
// (VIRTIO_NET_F_CTRL_MAC_ADDR is not offered).
func (n *Net) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device. Pairs whose queues the driver did not
// both enable are left out; receiving and transmitting start on the first
// pair, as the specification requires until VQ_PAIRS_SET.
func (n *Net) Activate(features uint64, queues []*virtio.Queue) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mergeable = features&FeatureMrgRxBuf != 0
	n.offloads = negotiatedOffloads(features)
	n.pairs = n.pairs[:0]
	for i := 0; i < n.cfg.Pairs; i++ {
		rx, tx := queues[2*i], queues[2*i+1]
		if rx == nil || tx == nil {
			break
		}
		n.pairs = append(n.pairs, newQueuePair(n, i, rx, tx, n.mergeable, n.offloads))
	}
	if len(n.pairs) == 0 {
		return fmt.Errorf("virtio-net: the driver enabled no queue pair")
	}
	n.active = 1
	n.cfg.Attach(n.pairs[:1])
	return nil
}

// Reset implements virtio.Device: the pollers let go of every pair.
func (n *Net) Reset() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.active > 0 {
		n.cfg.Attach(nil)
	}
	n.pairs, n.active = nil, 0
}

// ActivePairs returns how many queue pairs the driver is using.
func (n *Net) ActivePairs() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.active
}

// Process implements virtio.Device for the control queue.
func (n *Net) Process(q *virtio.Queue) {
	q.Drain(&n.ctrl, n.control)
}

// control answers one control command; the ack is its last byte.
func (n *Net) control(c *virtq.Chain) uint32 {
	var cmd [ctrlHeaderBytes + 2]byte
	got := gather(cmd[:], c.Readable())
	w := c.Writable()
	if len(w) == 0 || len(w[len(w)-1].Buf) == 0 {
		n.Stats.CtrlErrors.Add(1)
		return 0
	}
	ack := byte(ctrlAckErr)
	if got >= ctrlHeaderBytes+2 && cmd[0] == ctrlClassMQ && cmd[1] == ctrlMQPairsSet {
		if n.setPairs(int(binary.LittleEndian.Uint16(cmd[2:]))) {
			ack = ctrlAckOK
		}
	}
	if ack != ctrlAckOK {
		n.Stats.CtrlErrors.Add(1)
	}
	last := w[len(w)-1].Buf
	last[len(last)-1] = ack
	return 1
}

// setPairs switches the pollers to the first k pairs.
func (n *Net) setPairs(k int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if k < 1 || k > len(n.pairs) {
		return false
	}
	if k != n.active {
		n.active = k
		n.cfg.Attach(n.pairs[:k])
	}
	return true
}

// gather copies the bytes of segs into dst and returns how many it copied.
func gather(dst []byte, segs []virtq.Seg) int {
	n := 0
	for _, s := range segs {
		if n == len(dst) {
			break
		}
		n += copy(dst[n:], s.Buf)
	}
	return n
}

// offloads are what the driver negotiated: what it may ask of the device
// on transmit, and what it takes on receive.
type offloads struct {
	txCsum, txTSO          bool
	rxCsum, rxTSO4, rxTSO6 bool
}

func negotiatedOffloads(f uint64) offloads {
	o := offloads{txCsum: f&FeatureCsum != 0, rxCsum: f&FeatureGuestCsum != 0}
	// TSO without the checksum offload it relies on is not valid (5.1.3.1).
	o.txTSO = o.txCsum && f&(FeatureHostTSO4|FeatureHostTSO6) != 0
	o.rxTSO4 = o.rxCsum && f&FeatureGuestTSO4 != 0
	o.rxTSO6 = o.rxCsum && f&FeatureGuestTSO6 != 0
	return o
}

// accepts reports whether a driver with these offloads takes a frame with
// off pending.
func (o offloads) accepts(off vnet.Offload) bool {
	if off.NeedsCsum && !o.rxCsum {
		return false
	}
	switch off.GSOType {
	case vnet.GSONone:
		return true
	case vnet.GSOTCPv4:
		return o.rxTSO4
	case vnet.GSOTCPv6:
		return o.rxTSO6
	}
	return false
}
