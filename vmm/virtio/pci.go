package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/pci"
	"golang.org/x/sys/unix"
)

// The transport's I/O BAR holds one notification port for every queue
// (notify_off_multiplier 0): the driver writes the queue's index there, and
// each queue's ioeventfd matches its own index. A port write exits with
// the next instruction's address in the exit information, where an MMIO
// write has to be decoded by KVM's instruction emulator first (on AMD every
// time; on Intel the fast MMIO path avoids it), so the driver is offered
// the port first and the MMIO notification region after it, for drivers
// that take only memory BARs.
const (
	ioBarIndex       = 1
	ioBarSize        = 4 // the smallest I/O BAR
	notifyPortLength = 2 // the driver writes the 16-bit queue index
)

// Layout of the transport's memory BAR.
const (
	barIndex      = 0
	barSize       = 0x8000
	commonOffset  = 0x0000
	commonLength  = 0x38
	isrOffset     = 0x1000
	isrLength     = 4
	deviceOffset  = 0x2000
	deviceLength  = 0x1000
	notifyOffset  = 0x3000
	notifyMult    = 4
	msixTableOff  = 0x4000
	msixPBAOff    = 0x6000
	pciVendorID   = 0x1af4
	pciDeviceBase = 0x1040
)

// Virtio PCI capability types.
const (
	capCommon = 1
	capNotify = 2
	capISR    = 3
	capDevice = 4
	capVendor = 0x09
)

// Device status bits.
const (
	statusAcknowledge = 1
	statusDriver      = 2
	statusDriverOK    = 4
	statusFeaturesOK  = 8
	statusNeedsReset  = 0x40
	statusFailed      = 0x80
)

type queueState struct {
	size, maxSize uint16
	vector        uint16
	enabled       bool
	desc, avail   uint64
	used          uint64
}

// phase is where the transport is in the device's life cycle.
type phase uint8

const (
	// phaseConfig: after reset, before DRIVER_OK. The driver negotiates
	// and programs the queues.
	phaseConfig phase = iota
	// phaseActivating: DRIVER_OK was accepted and the device's Activate
	// runs, without mu held. Writes are refused, except a reset, which
	// is done once the activation ends.
	phaseActivating
	// phaseLive: DRIVER_OK is set (the activation may have failed, then
	// NEEDS_RESET is set too). Only a reset starts over.
	phaseLive
	// phaseResetting: a reset runs, without mu held: writes are refused.
	phaseResetting
)

// PCI exposes a Device as a modern virtio-pci function. It implements
// pci.Device.
//
// Locking: mu guards the registers and the life-cycle state. It is held
// only for register accesses and bookkeeping (including ioeventfd
// (un)registration, a KVM ioctl that never waits for a guest), never
// across a call into the device (Activate, Reset, Process) or anything
// that can block on a guest's behalf: activation and reset run outside it
// in phases that refuse concurrent writes. What the datapath touches from
// its own threads — NEEDS_RESET (fail), the ISR, the config vector — is
// atomic, so a poller or worker reporting a broken ring never waits for
// mu.
type PCI struct {
	dev         Device
	mem         *memory.Memory
	plat        pci.Platform
	cfg         *pci.ConfigSpace
	msix        *pci.MSIX
	devFeatures uint64 // offered; fixed at NewPCI

	mu             sync.Mutex
	phase          phase
	opDone         chan struct{} // closed when the running activation or reset ends
	resetPending   bool          // a reset written during phaseActivating
	drvFeatures    uint64
	devSel, drvSel uint32
	status         uint8 // the driver's bits; NEEDS_RESET is needsReset
	generation     uint8
	queueSel       uint16
	queues         []queueState
	active         []*worker
	barAddr        uint64
	ioAddr         uint16 // the I/O BAR's port, 0 while unmapped

	configVector atomic.Uint32 // pci.NoVector or a vector
	needsReset   atomic.Bool
	isr          atomic.Uint32 // ISR status; read-to-clear
	errMu        sync.Mutex    // guards brokenErr only; never held across a call
	brokenErr    error

	gate  gate
	stats transportCounters
}

// transportCounters back TransportStats.
type transportCounters struct {
	activations, failedActivations, resets atomic.Uint64
	refusedWrites, refusedFeatures         atomic.Uint64
	needsReset                             atomic.Uint64
}

// TransportStats counts what the driver did to the transport.
type TransportStats struct {
	// Activations counts DRIVER_OK accepted; FailedActivations those
	// that ended in NEEDS_RESET (a ring outside memory, a kick that could
	// not be registered, the device's Activate failing).
	Activations       uint64 `json:"activations"`
	FailedActivations uint64 `json:"failed_activations"`
	// Resets counts resets (the driver's writes of 0, and Reset calls).
	Resets uint64 `json:"resets"`
	// RefusedWrites counts common-configuration writes that broke the
	// rules and had no effect (see the table at writeCommon).
	RefusedWrites uint64 `json:"refused_writes"`
	// RefusedFeatures counts FEATURES_OK writes refused because the
	// driver's features were not a valid subset of the offer.
	RefusedFeatures uint64 `json:"refused_features"`
	// NeedsReset counts the times the device marked itself
	// DEVICE_NEEDS_RESET: a malformed ring met by a worker or poller, or
	// a failed activation (once per reset: a second error before the
	// driver resets is not counted again).
	NeedsReset uint64 `json:"needs_reset"`
}

// Stats returns the transport's counters.
func (p *PCI) Stats() TransportStats {
	c := &p.stats
	return TransportStats{Activations: c.activations.Load(), FailedActivations: c.failedActivations.Load(),
		Resets: c.resets.Load(), RefusedWrites: c.refusedWrites.Load(), RefusedFeatures: c.refusedFeatures.Load(),
		NeedsReset: c.needsReset.Load()}
}

// DeviceType returns the virtio device type of the device behind the
// transport (TypeNet, TypeBlock, TypeRNG, ...).
func (p *PCI) DeviceType() uint16 { return p.dev.Type() }

// Device returns the device model behind the transport.
func (p *PCI) Device() Device { return p.dev }

// worker serves one queue: it waits on the queue's kick eventfd. For a
// queue the device serves itself (SelfServer) there is no goroutine; the
// worker only owns the eventfd and its ioeventfd registration.
type worker struct {
	q  *Queue
	fd int
	// file wraps fd for the worker goroutine's reads (through Go's
	// netpoller); nil for a self-served queue, whose fd the device waits
	// on itself: in the netpoller too, every guest kick would also wake a
	// thread of the Go runtime, for nothing.
	file       *os.File
	notify     uint64 // registered ioeventfd address, 0 if none
	notifyPort uint16 // registered port ioeventfd, 0 if none
	done       chan struct{}
	selfServed bool
	stopped    bool // set by reset, guarded by PCI.gate.mu
}

// NewPCI wraps dev in a virtio-pci transport with one MSI-X vector for
// configuration changes and one per queue.
func NewPCI(dev Device, mem *memory.Memory, plat pci.Platform) (*PCI, error) {
	n := len(dev.QueueSizes())
	if n == 0 || n > 256 {
		return nil, fmt.Errorf("virtio device type %d has %d queues", dev.Type(), n)
	}
	p := &PCI{dev: dev, mem: mem, plat: plat}
	p.configVector.Store(pci.NoVector)
	p.gate.init()
	p.devFeatures = dev.Features() | FeatureVersion1 | FeatureEventIdx | FeatureIndirectDesc
	p.queues = make([]queueState, n)
	for i, s := range dev.QueueSizes() {
		p.queues[i] = queueState{maxSize: s, size: s, vector: pci.NoVector}
	}
	class := uint32(0xff0000) // misc
	switch dev.Type() {
	case TypeNet:
		class = 0x020000
	case TypeBlock:
		class = 0x010000
	}
	p.cfg = pci.NewConfigSpace(pciVendorID, pciDeviceBase+dev.Type(), pciVendorID, pciDeviceBase+dev.Type(), class, 1)
	p.cfg.AddBAR(barIndex, barSize, false)
	p.cfg.AddIOBAR(ioBarIndex, ioBarSize)
	p.addCap(capCommon, barIndex, commonOffset, commonLength, nil)
	// The driver takes the first notification capability it can use.
	p.addCap(capNotify, ioBarIndex, 0, notifyPortLength, make([]byte, 4)) // multiplier 0
	mult := make([]byte, 4)
	binary.LittleEndian.PutUint32(mult, notifyMult)
	p.addCap(capNotify, barIndex, notifyOffset, uint32(notifyMult*n), mult)
	p.addCap(capISR, barIndex, isrOffset, isrLength, nil)
	p.addCap(capDevice, barIndex, deviceOffset, deviceLength, nil)
	msix, err := pci.NewMSIX(p.cfg, plat, n+1, barIndex, msixTableOff, msixPBAOff)
	if err != nil {
		return nil, err
	}
	p.msix = msix
	p.cfg.OnMap = p.barMapped
	return p, nil
}

// addCap adds a virtio vendor capability pointing into BAR bar.
func (p *PCI) addCap(typ, bar uint8, offset, length uint32, extra []byte) {
	body := make([]byte, 14, 14+len(extra))
	body[0] = byte(16 + len(extra)) // cap_len, including id and next
	body[1] = typ
	body[2] = bar
	binary.LittleEndian.PutUint32(body[6:], offset)
	binary.LittleEndian.PutUint32(body[10:], length)
	p.cfg.AddCapability(capVendor, append(body, extra...), nil)
}

// Config implements pci.Device.
func (p *PCI) Config() *pci.ConfigSpace { return p.cfg }

// barMapped follows the guest's placement of the memory and I/O BARs,
// moving the queues' ioeventfds with them. A kick that can no longer be
// registered breaks the device (NEEDS_RESET).
func (p *PCI) barMapped(bar int, addr uint64) {
	p.mu.Lock()
	switch bar {
	case barIndex:
		p.barAddr = addr
	case ioBarIndex:
		p.ioAddr = uint16(addr)
	default:
		p.mu.Unlock()
		return
	}
	var errs []error
	for _, w := range p.active {
		if err := p.registerKick(w); err != nil {
			errs = append(errs, err)
		}
	}
	p.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		p.fail(err)
	}
}

// registerKick (re)registers w's ioeventfds at the queue's notification
// address and at the notification port, where those are mapped. Called
// with mu held.
func (p *PCI) registerKick(w *worker) error {
	p.unregisterKick(w)
	// Unmapped: kicks arrive as MMIO or port writes, if at all.
	if p.barAddr != 0 {
		addr := p.barAddr + notifyOffset + uint64(w.q.Index)*notifyMult
		if err := p.plat.RegisterIOEvent(addr, 0, w.fd); err != nil {
			return fmt.Errorf("queue %d: register its kick at %#x as an ioeventfd: %w", w.q.Index, addr, err)
		}
		w.notify = addr
	}
	if p.ioAddr != 0 {
		if err := p.plat.RegisterPortEvent(p.ioAddr, uint16(w.q.Index), w.fd); err != nil {
			return fmt.Errorf("queue %d: register its kick on port %#x as an ioeventfd: %w", w.q.Index, p.ioAddr, err)
		}
		w.notifyPort = p.ioAddr
	}
	return nil
}

// unregisterKick removes w's ioeventfds, if registered. Called with mu
// held.
func (p *PCI) unregisterKick(w *worker) {
	if w.notify != 0 {
		_ = p.plat.UnregisterIOEvent(w.notify, 0, w.fd)
		w.notify = 0
	}
	if w.notifyPort != 0 {
		_ = p.plat.UnregisterPortEvent(w.notifyPort, uint16(w.q.Index), w.fd)
		w.notifyPort = 0
	}
}

// BARRead implements pci.Device.
func (p *PCI) BARRead(bar int, off uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if bar != barIndex {
		return // the notification port reads as zero
	}
	switch {
	case off >= commonOffset && off < commonOffset+commonLength:
		p.mu.Lock()
		p.readCommon(off-commonOffset, data)
		p.mu.Unlock()
	case off >= isrOffset && off < isrOffset+isrLength:
		data[0] = uint8(p.isr.Swap(0))
	case off >= deviceOffset && off < deviceOffset+deviceLength:
		p.dev.ReadConfig(off-deviceOffset, data)
	case off >= msixTableOff && off < msixTableOff+uint64(p.msix.TableSize()):
		p.msix.ReadTable(off-msixTableOff, data)
	case off >= msixPBAOff && off < msixPBAOff+uint64(p.msix.PBASize()):
		p.msix.ReadPBA(off-msixPBAOff, data)
	}
}

// BARWrite implements pci.Device.
func (p *PCI) BARWrite(bar int, off uint64, data []byte) {
	if bar == ioBarIndex {
		// A kick on the port that no ioeventfd matched: the queue's
		// index, if it is one.
		if off == 0 && len(data) == notifyPortLength {
			p.kickUnmatched(int(binary.LittleEndian.Uint16(data)))
		}
		return
	}
	if bar != barIndex {
		return
	}
	switch {
	case off >= commonOffset && off < commonOffset+commonLength:
		p.writeCommon(off-commonOffset, data)
	case off >= deviceOffset && off < deviceOffset+deviceLength:
		p.dev.WriteConfig(off-deviceOffset, data)
	case off >= notifyOffset && off < notifyOffset+uint64(notifyMult*len(p.queues)):
		// A kick that did not go through the ioeventfd.
		p.kickUnmatched(int((off - notifyOffset) / notifyMult))
	case off >= msixTableOff && off < msixTableOff+uint64(p.msix.TableSize()):
		p.msix.WriteTable(off-msixTableOff, data)
	}
}

// kickUnmatched signals queue q's kick eventfd for a notification that
// came as an exit (an unknown queue index is ignored).
func (p *PCI) kickUnmatched(q int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.active {
		if w.q.Index == q {
			unix.Write(w.fd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}
	}
}

func get(v uint64, off uint64, data []byte) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	for i := range data {
		if int(off)+i < 8 {
			data[i] = b[int(off)+i]
		}
	}
}

func put(old uint64, off uint64, data []byte) uint64 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], old)
	for i, v := range data {
		if int(off)+i < 8 {
			b[int(off)+i] = v
		}
	}
	return binary.LittleEndian.Uint64(b[:])
}

// Common configuration field offsets.
const (
	ccDeviceFeatureSel = 0x00
	ccDeviceFeature    = 0x04
	ccDriverFeatureSel = 0x08
	ccDriverFeature    = 0x0c
	ccConfigMSIX       = 0x10
	ccNumQueues        = 0x12
	ccStatus           = 0x14
	ccGeneration       = 0x15
	ccQueueSelect      = 0x16
	ccQueueSize        = 0x18
	ccQueueMSIX        = 0x1a
	ccQueueEnable      = 0x1c
	ccQueueNotifyOff   = 0x1e
	ccQueueDesc        = 0x20
	ccQueueDriver      = 0x28
	ccQueueDevice      = 0x30
)

// field returns the register containing off, its start and width.
func field(off uint64) (uint64, int) {
	switch {
	case off < 0x10:
		return off &^ 3, 4
	case off < 0x14:
		return off &^ 1, 2
	case off < 0x16:
		return off, 1
	case off < 0x20:
		return off &^ 1, 2
	}
	return off &^ 7, 8
}

func (p *PCI) readCommon(off uint64, data []byte) {
	start, _ := field(off)
	var v uint64
	q := p.selected()
	switch start {
	case ccDeviceFeatureSel:
		v = uint64(p.devSel)
	case ccDeviceFeature:
		if p.devSel < 2 {
			v = p.devFeatures >> (32 * p.devSel) & 0xffffffff
		}
	case ccDriverFeatureSel:
		v = uint64(p.drvSel)
	case ccDriverFeature:
		if p.drvSel < 2 {
			v = p.drvFeatures >> (32 * p.drvSel) & 0xffffffff
		}
	case ccConfigMSIX:
		v = uint64(p.configVector.Load())
	case ccNumQueues:
		v = uint64(len(p.queues))
	case ccStatus:
		v = uint64(p.status)
		if p.needsReset.Load() {
			v |= statusNeedsReset
		}
	case ccGeneration:
		v = uint64(p.generation)
	case ccQueueSelect:
		v = uint64(p.queueSel)
	case ccQueueSize:
		if q != nil {
			v = uint64(q.size)
		}
	case ccQueueMSIX:
		v = pci.NoVector
		if q != nil {
			v = uint64(q.vector)
		}
	case ccQueueEnable:
		if q != nil && q.enabled {
			v = 1
		}
	case ccQueueNotifyOff:
		v = uint64(p.queueSel)
	case ccQueueDesc:
		if q != nil {
			v = q.desc
		}
	case ccQueueDriver:
		if q != nil {
			v = q.avail
		}
	case ccQueueDevice:
		if q != nil {
			v = q.used
		}
	}
	get(v, off-start, data)
}

func (p *PCI) selected() *queueState {
	if int(p.queueSel) < len(p.queues) {
		return &p.queues[p.queueSel]
	}
	return nil
}
