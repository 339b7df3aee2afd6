package virtio

import (
	"errors"
	"fmt"
	"os"

	"github.com/colibrivm/colibri/vmm/pci"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
	"golang.org/x/sys/unix"
)

// statusKnown are the device_status bits a driver may write (virtio 1.2,
// 2.1); NEEDS_RESET is the device's.
const statusKnown = statusAcknowledge | statusDriver | statusDriverOK | statusFeaturesOK | statusFailed

// writeCommon applies a driver write to the common configuration
// (virtio 1.2, 4.1.4.3), following the rules of 2.1, 2.2 and 3.1.1. A
// write that breaks them has no effect and is counted in
// TransportStats.RefusedWrites; none of them forces NEEDS_RESET or FAILED
// (the driver's mistake costs only its own device, which carries on as it
// was; a driver that wants to start over resets).
//
//	register                  before DRIVER_OK          DRIVER_OK set   activating / resetting
//	device_feature_select     written                   written         refused
//	driver_feature_select     written                   written         refused
//	queue_select              written                   written         refused
//	driver_feature            until FEATURES_OK, then   refused         refused
//	                          refused (3.1.1: fixed)
//	config_msix_vector        written (NO_VECTOR when   written         refused
//	                          no such vector, 4.1.5.1.2)
//	device_status             see writeStatus           see writeStatus 0: deferred reset while
//	                                                                    activating; rest refused
//	queue_size                power of two <= max on a  refused         refused
//	                          queue not yet enabled
//	queue_msix_vector         written (NO_VECTOR when   refused         refused
//	                          no such vector)
//	queue_enable              1 enables; 0 refused      refused         refused
//	                          (4.1.4.3.2: MUST NOT)
//	queue_desc/driver/device  while the queue is not    refused         refused
//	                          enabled
//	device_feature,           read-only: refused        refused         refused
//	num_queues, generation,
//	queue_notify_off
//
// A per-queue register of a queue_select with no queue is refused too.
func (p *PCI) writeCommon(off uint64, data []byte) {
	p.mu.Lock()
	start, _ := field(off)
	if start == ccStatus {
		act := p.writeStatus(uint8(put(uint64(p.status), off-start, data)))
		p.mu.Unlock()
		switch act {
		case doActivate:
			p.activate()
		case doReset:
			p.reset(true)
		}
		return
	}
	ok := p.writeRegister(start, off-start, data)
	p.mu.Unlock()
	if !ok {
		p.stats.refusedWrites.Add(1)
	}
}

// writeRegister applies a write to a register other than device_status
// and reports whether it was allowed. Called with mu held.
func (p *PCI) writeRegister(start, at uint64, data []byte) bool {
	if p.phase == phaseActivating || p.phase == phaseResetting {
		return false
	}
	live := p.phase == phaseLive
	q := p.selected()
	switch start {
	case ccDeviceFeatureSel:
		p.devSel = uint32(put(uint64(p.devSel), at, data))
	case ccDriverFeatureSel:
		p.drvSel = uint32(put(uint64(p.drvSel), at, data))
	case ccDriverFeature:
		if p.status&statusFeaturesOK != 0 || live {
			return false
		}
		if p.drvSel < 2 {
			shift := 32 * p.drvSel
			half := put(p.drvFeatures>>shift&0xffffffff, at, data) & 0xffffffff
			p.drvFeatures = p.drvFeatures&^(0xffffffff<<shift) | half<<shift
		}
	case ccConfigMSIX:
		v := uint16(put(uint64(p.configVector.Load()), at, data))
		if int(v) >= p.msix.Vectors() {
			v = pci.NoVector
		}
		p.configVector.Store(uint32(v))
	case ccQueueSelect:
		p.queueSel = uint16(put(uint64(p.queueSel), at, data))
	case ccQueueSize:
		if q == nil || live || q.enabled {
			return false
		}
		s := uint16(put(uint64(q.size), at, data))
		if s == 0 || s > q.maxSize || s&(s-1) != 0 {
			return false
		}
		q.size = s
	case ccQueueMSIX:
		if q == nil || live {
			return false
		}
		v := uint16(put(uint64(q.vector), at, data))
		if int(v) >= p.msix.Vectors() {
			v = pci.NoVector
		}
		q.vector = v
	case ccQueueEnable:
		if q == nil || live || put(0, at, data)&1 == 0 {
			return false
		}
		q.enabled = true
	case ccQueueDesc, ccQueueDriver, ccQueueDevice:
		if q == nil || live || q.enabled {
			return false
		}
		switch start {
		case ccQueueDesc:
			q.desc = put(q.desc, at, data)
		case ccQueueDriver:
			q.avail = put(q.avail, at, data)
		default:
			q.used = put(q.used, at, data)
		}
	default: // device_feature, num_queues, config_generation, queue_notify_off
		return false
	}
	return true
}

// statusAction is what a device_status write asks for beyond the register.
type statusAction int

const (
	doNothing statusAction = iota
	doActivate
	doReset
)

// writeStatus applies a driver write of v to device_status. Called with mu
// held; the caller performs the returned action without it.
//
//	write                                   effect
//	0                                       reset (any phase; while activating it
//	                                        is done when the activation ends)
//	a reserved bit (0x10, 0x20)             refused
//	clears a bit already set                refused (2.1.1: only a reset clears)
//	anything but 0 while activating or      refused
//	resetting
//	adds bits after FAILED                  refused (2.1.1: reset first)
//	adds DRIVER without ACKNOWLEDGE         refused (3.1.1 order)
//	adds FEATURES_OK without DRIVER         refused
//	adds FEATURES_OK, features invalid      applied without FEATURES_OK (2.2.2: the
//	                                        device fails to set it; counted in
//	                                        RefusedFeatures), the driver reads it back
//	adds DRIVER_OK without FEATURES_OK      refused: FEATURES_OK must have been
//	already accepted                        accepted by an earlier write (3.1.1)
//	adds DRIVER_OK while NEEDS_RESET        refused
//	adds DRIVER_OK                          activation (once per reset)
//	adds FAILED                             applied; the device keeps running
//	                                        until the driver resets it
//	the bits already set (a rewrite)        no effect, not refused
//
// NEEDS_RESET in a write is ignored: the device owns it, and a driver
// writes back the status it read.
func (p *PCI) writeStatus(v uint8) statusAction {
	if v == 0 {
		return doReset
	}
	v &^= statusNeedsReset
	old := p.status
	added := v &^ old
	switch {
	case p.phase == phaseActivating || p.phase == phaseResetting,
		v&^statusKnown != 0,
		v&old != old,
		added != 0 && old&statusFailed != 0,
		added&statusDriver != 0 && v&statusAcknowledge == 0,
		added&statusFeaturesOK != 0 && v&statusDriver == 0,
		added&statusDriverOK != 0 && (old&statusFeaturesOK == 0 || p.needsReset.Load()):
		p.stats.refusedWrites.Add(1)
		return doNothing
	}
	if added&statusFeaturesOK != 0 && !p.featuresValid() {
		v &^= statusFeaturesOK // the driver reads it back and gives up
		p.stats.refusedFeatures.Add(1)
	}
	p.status = v
	if added&statusDriverOK == 0 {
		return doNothing
	}
	p.phase = phaseActivating
	p.opDone = make(chan struct{})
	p.stats.activations.Add(1)
	return doActivate
}

// featuresValid reports whether the driver's features are a subset of the
// offer that includes VERSION_1 (colibri is a modern-only device).
func (p *PCI) featuresValid() bool {
	return p.drvFeatures&^p.devFeatures == 0 && p.drvFeatures&FeatureVersion1 != 0
}

// activate runs an activation accepted by writeStatus (phaseActivating):
// it builds the enabled queues, their kick eventfds and ioeventfds, hands
// the queues to the device's Activate (without mu) and starts a worker for
// every queue the device does not serve itself. Any failure leaves nothing
// running and sets NEEDS_RESET. A reset written meanwhile is done last.
func (p *PCI) activate() {
	p.mu.Lock()
	features := p.drvFeatures
	queues, err := p.buildQueuesLocked()
	p.mu.Unlock()
	if err == nil {
		if err = p.dev.Activate(features, queues); err != nil {
			err = fmt.Errorf("activate virtio device type %d: %w", p.dev.Type(), err)
		}
	}
	p.mu.Lock()
	if err != nil {
		p.releaseLocked(p.active)
		p.active = nil
	} else {
		for _, w := range p.active {
			if w.selfServed {
				close(w.done)
			} else {
				go p.serve(w)
			}
		}
	}
	p.phase = phaseLive
	close(p.opDone)
	p.opDone = nil
	pending := p.resetPending
	p.resetPending = false
	p.mu.Unlock()
	if err != nil {
		p.stats.failedActivations.Add(1)
		p.fail(err)
	}
	if pending {
		p.reset(true)
	}
}

// buildQueuesLocked makes the enabled queues and their workers (not yet
// started), registers their kicks and sets p.active, so that BAR moves and
// MMIO kicks reach them from now on. On failure nothing is left behind.
// Called with mu held.
func (p *PCI) buildQueuesLocked() ([]*Queue, error) {
	eventIdx := p.drvFeatures&FeatureEventIdx != 0
	queues := make([]*Queue, len(p.queues))
	var workers []*worker
	self, _ := p.dev.(SelfServer)
	fail := func(err error) ([]*Queue, error) {
		p.releaseLocked(workers)
		return nil, err
	}
	for i := range p.queues {
		st := &p.queues[i]
		if !st.enabled {
			continue
		}
		vq, err := virtq.New(p.mem, virtq.Config{Size: st.size, DescAddr: st.desc, AvailAddr: st.avail, UsedAddr: st.used, EventIdx: eventIdx})
		if err != nil {
			return fail(fmt.Errorf("queue %d: %w", i, err))
		}
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return fail(fmt.Errorf("eventfd for queue %d: %w", i, err))
		}
		vector := int(st.vector)
		q := &Queue{Queue: vq, Index: i, interrupt: func() { p.raise(vector) }, broken: p.fail, kickFD: fd}
		queues[i] = q
		w := &worker{q: q, fd: fd, done: make(chan struct{}), selfServed: self != nil && self.ServesQueue(i)}
		if !w.selfServed {
			w.file = os.NewFile(uintptr(fd), fmt.Sprintf("virtio-kick-%d", i))
		}
		workers = append(workers, w)
		if err := p.registerKick(w); err != nil {
			return fail(err)
		}
	}
	p.active = workers
	return queues, nil
}

// releaseLocked unregisters and closes the kicks of workers that never
// started. Called with mu held.
func (p *PCI) releaseLocked(workers []*worker) {
	for _, w := range workers {
		p.unregisterKick(w)
		w.closeKick()
	}
}

// closeKick closes the worker's kick eventfd.
func (w *worker) closeKick() {
	if w.file != nil {
		w.file.Close() // also ends the worker's Read
		return
	}
	unix.Close(w.fd)
}

// serve is a queue's worker: each kick runs the device's Process, unless
// the device is paused (then after Resume) or being reset (then never).
func (p *PCI) serve(w *worker) {
	defer close(w.done)
	buf := make([]byte, 8)
	// The first pass serves chains made available before the worker started.
	for first := true; ; first = false {
		if !first {
			if _, err := w.file.Read(buf); err != nil {
				return
			}
		}
		if !p.gate.enter(w) {
			return
		}
		if w.q.Broken() == nil {
			p.dev.Process(w.q)
		}
		p.gate.exit()
	}
}

// raise sets the ISR and fires vector v.
func (p *PCI) raise(v int) {
	p.isr.Or(1)
	p.msix.Fire(v)
}

// fail marks the device as needing a reset and tells the driver with a
// configuration-change interrupt (2.1.2), once. It takes no lock held
// across anything: pollers and workers call it from inside their
// critical sections.
func (p *PCI) fail(err error) {
	p.errMu.Lock()
	if p.brokenErr == nil {
		p.brokenErr = err
	}
	p.errMu.Unlock()
	if p.needsReset.Swap(true) {
		return
	}
	p.stats.needsReset.Add(1)
	p.isr.Or(2)
	p.msix.Fire(int(p.configVector.Load()))
}

// Err returns why the device was marked DEVICE_NEEDS_RESET, if it was.
func (p *PCI) Err() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.brokenErr
}

// Reset stops the workers and returns the device to its initial state, as
// a driver write of 0 to device_status does. Queues the device serves
// itself keep their eventfds until the device's Reset has let go of them.
// If an activation or a reset is running on another thread, Reset waits
// for it first. A paused device stays paused.
func (p *PCI) Reset() { p.reset(false) }

// reset is Reset; for a driver's write (fromGuest) it never waits for
// another thread's activation or reset: it is deferred to the end of an
// activation, and is one already with a reset.
func (p *PCI) reset(fromGuest bool) {
	p.mu.Lock()
	for p.phase == phaseActivating || p.phase == phaseResetting {
		if fromGuest {
			if p.phase == phaseActivating {
				p.resetPending = true
			}
			p.mu.Unlock()
			return
		}
		done := p.opDone
		p.mu.Unlock()
		<-done
		p.mu.Lock()
	}
	p.phase = phaseResetting
	p.opDone = make(chan struct{})
	active := p.active
	p.active = nil
	for _, w := range active {
		p.unregisterKick(w)
		if !w.selfServed {
			w.closeKick() // ends the worker's Read
		}
	}
	p.mu.Unlock()
	p.gate.stop(active)
	for _, w := range active {
		<-w.done
	}
	p.dev.Reset()
	for _, w := range active {
		if w.selfServed {
			w.closeKick()
		}
	}
	p.mu.Lock()
	p.status, p.drvFeatures, p.devSel, p.drvSel = 0, 0, 0, 0
	p.queueSel = 0
	p.configVector.Store(pci.NoVector)
	for i := range p.queues {
		p.queues[i] = queueState{maxSize: p.queues[i].maxSize, size: p.queues[i].maxSize, vector: pci.NoVector}
	}
	p.errMu.Lock()
	p.brokenErr = nil
	p.errMu.Unlock()
	p.needsReset.Store(false)
	p.isr.Store(0)
	p.generation++
	p.phase = phaseConfig
	close(p.opDone)
	p.opDone = nil
	p.mu.Unlock()
	p.stats.resets.Add(1)
}

// Close stops the device and releases its interrupt routes. It works on
// a paused device.
func (p *PCI) Close() error {
	p.Reset()
	var errs []error
	if c, ok := p.dev.(interface{ Close() error }); ok {
		errs = append(errs, c.Close())
	}
	errs = append(errs, p.msix.Close())
	return errors.Join(errs...)
}
