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
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
	"golang.org/x/sys/unix"
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

// PCI exposes a Device as a modern virtio-pci function. It implements
// pci.Device.
type PCI struct {
	dev  Device
	mem  *memory.Memory
	plat pci.Platform
	cfg  *pci.ConfigSpace
	msix *pci.MSIX

	mu             sync.Mutex
	devFeatures    uint64
	drvFeatures    uint64
	devSel, drvSel uint32
	status         uint8
	generation     uint8
	configVector   uint16
	queueSel       uint16
	queues         []queueState
	isr            atomic.Uint32 // ISR status; read-to-clear, set without the lock
	active         []*worker
	barAddr        uint64
	brokenErr      error
}

// worker serves one queue: it waits on the queue's kick eventfd. For a
// queue the device serves itself (SelfServer) there is no goroutine; the
// worker only owns the eventfd and its ioeventfd registration.
type worker struct {
	q          *Queue
	fd         int
	file       *os.File
	notify     uint64 // registered ioeventfd address, 0 if none
	done       chan struct{}
	selfServed bool
}

// NewPCI wraps dev in a virtio-pci transport with one MSI-X vector for
// configuration changes and one per queue.
func NewPCI(dev Device, mem *memory.Memory, plat pci.Platform) (*PCI, error) {
	n := len(dev.QueueSizes())
	if n == 0 || n > 256 {
		return nil, fmt.Errorf("virtio device type %d has %d queues", dev.Type(), n)
	}
	p := &PCI{dev: dev, mem: mem, plat: plat, configVector: pci.NoVector}
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
	p.addCap(capCommon, commonOffset, commonLength, nil)
	mult := make([]byte, 4)
	binary.LittleEndian.PutUint32(mult, notifyMult)
	p.addCap(capNotify, notifyOffset, uint32(notifyMult*n), mult)
	p.addCap(capISR, isrOffset, isrLength, nil)
	p.addCap(capDevice, deviceOffset, deviceLength, nil)
	msix, err := pci.NewMSIX(p.cfg, plat, n+1, barIndex, msixTableOff, msixPBAOff)
	if err != nil {
		return nil, err
	}
	p.msix = msix
	p.cfg.OnMap = p.barMapped
	return p, nil
}

// addCap adds a virtio vendor capability pointing into the BAR.
func (p *PCI) addCap(typ uint8, offset, length uint32, extra []byte) {
	body := make([]byte, 14, 14+len(extra))
	body[0] = byte(16 + len(extra)) // cap_len, including id and next
	body[1] = typ
	body[2] = barIndex
	binary.LittleEndian.PutUint32(body[6:], offset)
	binary.LittleEndian.PutUint32(body[10:], length)
	p.cfg.AddCapability(capVendor, append(body, extra...), nil)
}

// Config implements pci.Device.
func (p *PCI) Config() *pci.ConfigSpace { return p.cfg }

// barMapped follows the guest's placement of the BAR, moving the queues'
// ioeventfds with it.
func (p *PCI) barMapped(bar int, addr uint64) {
	if bar != barIndex {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.barAddr = addr
	for _, w := range p.active {
		p.registerKick(w)
	}
}

// registerKick (re)registers w's ioeventfd at the queue's notify address.
func (p *PCI) registerKick(w *worker) {
	if w.notify != 0 {
		p.plat.UnregisterIOEvent(w.notify, 0, w.fd)
		w.notify = 0
	}
	if p.barAddr == 0 {
		return // unmapped: kicks arrive as MMIO writes, if at all
	}
	addr := p.barAddr + notifyOffset + uint64(w.q.Index)*notifyMult
	if err := p.plat.RegisterIOEvent(addr, 0, w.fd); err == nil {
		w.notify = addr
	}
}

// BARRead implements pci.Device.
func (p *PCI) BARRead(bar int, off uint64, data []byte) {
	for i := range data {
		data[i] = 0
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
	switch {
	case off >= commonOffset && off < commonOffset+commonLength:
		p.writeCommon(off-commonOffset, data)
	case off >= deviceOffset && off < deviceOffset+deviceLength:
		p.dev.WriteConfig(off-deviceOffset, data)
	case off >= notifyOffset && off < notifyOffset+uint64(notifyMult*len(p.queues)):
		// A kick that did not go through the ioeventfd.
		q := int((off - notifyOffset) / notifyMult)
		p.mu.Lock()
		for _, w := range p.active {
			if w.q.Index == q {
				unix.Write(w.fd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
			}
		}
		p.mu.Unlock()
	case off >= msixTableOff && off < msixTableOff+uint64(p.msix.TableSize()):
		p.msix.WriteTable(off-msixTableOff, data)
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
		v = uint64(p.configVector)
	case ccNumQueues:
		v = uint64(len(p.queues))
	case ccStatus:
		v = uint64(p.status)
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

func (p *PCI) writeCommon(off uint64, data []byte) {
	p.mu.Lock()
	start, _ := field(off)
	q := p.selected()
	live := p.status&statusDriverOK != 0
	var reset bool
	switch start {
	case ccDeviceFeatureSel:
		p.devSel = uint32(put(uint64(p.devSel), off-start, data))
	case ccDriverFeatureSel:
		p.drvSel = uint32(put(uint64(p.drvSel), off-start, data))
	case ccDriverFeature:
		if p.status&statusFeaturesOK == 0 && p.drvSel < 2 {
			half := put(p.drvFeatures>>(32*p.drvSel)&0xffffffff, off-start, data) & 0xffffffff
			shift := 32 * p.drvSel
			p.drvFeatures = p.drvFeatures&^(0xffffffff<<shift) | half<<shift
		}
	case ccConfigMSIX:
		v := uint16(put(uint64(p.configVector), off-start, data))
		if int(v) >= p.msix.Vectors() {
			v = pci.NoVector
		}
		p.configVector = v
	case ccStatus:
		v := uint8(put(uint64(p.status), off-start, data))
		if v == 0 {
			reset = true
			break
		}
		if v&statusFeaturesOK != 0 && p.status&statusFeaturesOK == 0 {
			if p.drvFeatures&^p.devFeatures != 0 || p.drvFeatures&FeatureVersion1 == 0 {
				v &^= statusFeaturesOK // refuse: the guest reads it back
			}
		}
		old := p.status
		p.status = v
		if v&statusDriverOK != 0 && old&statusDriverOK == 0 {
			if err := p.activateLocked(); err != nil {
				p.status |= statusNeedsReset
			}
		}
	case ccQueueSelect:
		p.queueSel = uint16(put(uint64(p.queueSel), off-start, data))
	case ccQueueSize:
		if q != nil && !live {
			s := uint16(put(uint64(q.size), off-start, data))
			if s != 0 && s <= q.maxSize && s&(s-1) == 0 {
				q.size = s
			}
		}
	case ccQueueMSIX:
		if q != nil {
			v := uint16(put(uint64(q.vector), off-start, data))
			if int(v) >= p.msix.Vectors() {
				v = pci.NoVector
			}
			q.vector = v
		}
	case ccQueueEnable:
		if q != nil && !live && put(0, off-start, data)&1 == 1 {
			q.enabled = true
		}
	case ccQueueDesc:
		if q != nil && !live {
			q.desc = put(q.desc, off-start, data)
		}
	case ccQueueDriver:
		if q != nil && !live {
			q.avail = put(q.avail, off-start, data)
		}
	case ccQueueDevice:
		if q != nil && !live {
			q.used = put(q.used, off-start, data)
		}
	}
	p.mu.Unlock()
	if reset {
		p.Reset()
	}
}

// activateLocked builds the enabled queues and their kick eventfds, hands
// them to the device and starts a worker for every queue the device does
// not serve itself.
func (p *PCI) activateLocked() error {
	eventIdx := p.drvFeatures&FeatureEventIdx != 0
	queues := make([]*Queue, len(p.queues))
	var workers []*worker
	closeAll := func() {
		for _, w := range workers {
			w.file.Close()
		}
	}
	self, _ := p.dev.(SelfServer)
	for i := range p.queues {
		st := &p.queues[i]
		if !st.enabled {
			continue
		}
		vq, err := virtq.New(p.mem, virtq.Config{Size: st.size, DescAddr: st.desc, AvailAddr: st.avail, UsedAddr: st.used, EventIdx: eventIdx})
		if err != nil {
			closeAll()
			p.brokenErr = fmt.Errorf("queue %d: %w", i, err)
			return p.brokenErr
		}
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			closeAll()
			p.brokenErr = fmt.Errorf("eventfd for queue %d: %w", i, err)
			return p.brokenErr
		}
		vector := int(st.vector)
		q := &Queue{Queue: vq, Index: i, interrupt: func() { p.raise(vector) }, broken: p.fail, kickFD: fd}
		queues[i] = q
		workers = append(workers, &worker{
			q: q, fd: fd, file: os.NewFile(uintptr(fd), fmt.Sprintf("virtio-kick-%d", i)),
			done: make(chan struct{}), selfServed: self != nil && self.ServesQueue(i),
		})
	}
	if err := p.dev.Activate(p.drvFeatures, queues); err != nil {
		closeAll()
		p.brokenErr = err
		return err
	}
	for _, w := range workers {
		p.registerKick(w)
		p.active = append(p.active, w)
		if w.selfServed {
			close(w.done)
			continue
		}
		go p.serve(w)
	}
	return nil
}

// serve is a queue's worker: each kick runs the device's Process.
func (p *PCI) serve(w *worker) {
	defer close(w.done)
	buf := make([]byte, 8)
	// Chains made available before the worker started.
	p.dev.Process(w.q)
	for {
		if _, err := w.file.Read(buf); err != nil {
			return
		}
		if w.q.Broken() != nil {
			continue
		}
		p.dev.Process(w.q)
	}
}

// raise sets the ISR and fires vector v.
func (p *PCI) raise(v int) {
	p.isr.Or(1)
	p.msix.Fire(v)
}

// fail marks the device as needing a reset and tells the driver.
func (p *PCI) fail(err error) {
	p.mu.Lock()
	if p.brokenErr == nil {
		p.brokenErr = err
	}
	p.status |= statusNeedsReset
	p.isr.Or(2)
	v := int(p.configVector)
	p.mu.Unlock()
	p.msix.Fire(v)
}

// Err returns why the device was marked DEVICE_NEEDS_RESET, if it was.
func (p *PCI) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.brokenErr
}

// Reset stops the workers and returns the device to its initial state, as
// a driver write of 0 to device_status does. Queues the device serves
// itself keep their eventfds until the device's Reset has let go of them.
func (p *PCI) Reset() {
	p.mu.Lock()
	active := p.active
	p.active = nil
	for _, w := range active {
		if w.notify != 0 {
			p.plat.UnregisterIOEvent(w.notify, 0, w.fd)
		}
		if !w.selfServed {
			w.file.Close()
		}
	}
	p.mu.Unlock()
	for _, w := range active {
		<-w.done
	}
	p.dev.Reset()
	for _, w := range active {
		if w.selfServed {
			w.file.Close()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status, p.drvFeatures, p.devSel, p.drvSel = 0, 0, 0, 0
	p.isr.Store(0)
	p.configVector, p.queueSel, p.brokenErr = pci.NoVector, 0, nil
	for i := range p.queues {
		p.queues[i] = queueState{maxSize: p.queues[i].maxSize, size: p.queues[i].maxSize, vector: pci.NoVector}
	}
	p.generation++
}

// Close stops the device and releases its interrupt routes.
func (p *PCI) Close() error {
	p.Reset()
	var errs []error
	if c, ok := p.dev.(interface{ Close() error }); ok {
		errs = append(errs, c.Close())
	}
	errs = append(errs, p.msix.Close())
	return errors.Join(errs...)
}
