package virtio

import (
	"sync"

	"github.com/colibrivm/colibri/vmm/pci"
	"golang.org/x/sys/unix"
)

// ReadStatusForTest reads device_status as the driver does.
func (p *PCI) ReadStatusForTest() uint8 {
	b := []byte{0}
	p.BARRead(0, commonOffset+ccStatus, b)
	return b[0]
}

// FakeRoute is an MSI route that counts the interrupts fired on it.
type FakeRoute struct {
	mu    sync.Mutex
	fired int
	msg   pci.MSIMessage
}

// Program implements pci.InterruptRoute.
func (r *FakeRoute) Program(m pci.MSIMessage) error {
	r.mu.Lock()
	r.msg = m
	r.mu.Unlock()
	return nil
}

// Fire implements pci.InterruptRoute.
func (r *FakeRoute) Fire() error { r.mu.Lock(); r.fired++; r.mu.Unlock(); return nil }

// EventFD implements pci.InterruptRoute.
func (r *FakeRoute) EventFD() int { return -1 }

// Close implements pci.InterruptRoute.
func (r *FakeRoute) Close() error { return nil }

// Count returns how many times the route fired.
func (r *FakeRoute) Count() int { r.mu.Lock(); defer r.mu.Unlock(); return r.fired }

// FakePlatform is a pci.Platform for tests whose ioeventfds behave like
// KVM's: registering an address twice fails with EEXIST, unregistering
// an unknown one with ENOENT; FailRegister, when set, fails every
// registration.
type FakePlatform struct {
	mu           sync.Mutex
	events       map[uint64]int
	routes       []*FakeRoute
	failRegister error
}

// NewFakePlatform returns a platform with nothing registered.
func NewFakePlatform() *FakePlatform { return &FakePlatform{events: map[uint64]int{}} }

// AllocateMSI implements pci.Platform.
func (p *FakePlatform) AllocateMSI() (pci.InterruptRoute, error) {
	r := &FakeRoute{}
	p.mu.Lock()
	p.routes = append(p.routes, r)
	p.mu.Unlock()
	return r, nil
}

// RegisterIOEvent implements pci.Platform.
func (p *FakePlatform) RegisterIOEvent(addr uint64, _ uint32, fd int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failRegister != nil {
		return p.failRegister
	}
	if _, dup := p.events[addr]; dup {
		return unix.EEXIST
	}
	p.events[addr] = fd
	return nil
}

// UnregisterIOEvent implements pci.Platform.
func (p *FakePlatform) UnregisterIOEvent(addr uint64, _ uint32, _ int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.events[addr]; !ok {
		return unix.ENOENT
	}
	delete(p.events, addr)
	return nil
}

// portKey is where a port ioeventfd is kept in FakePlatform.events: above
// every MMIO address.
func portKey(port, data uint16) uint64 { return 1<<63 | uint64(port)<<16 | uint64(data) }

// RegisterPortEvent implements pci.Platform.
func (p *FakePlatform) RegisterPortEvent(port, data uint16, fd int) error {
	return p.RegisterIOEvent(portKey(port, data), 2, fd)
}

// UnregisterPortEvent implements pci.Platform.
func (p *FakePlatform) UnregisterPortEvent(port, data uint16, fd int) error {
	return p.UnregisterIOEvent(portKey(port, data), 2, fd)
}

// PortEvent returns the eventfd registered for writes of data to port.
func (p *FakePlatform) PortEvent(port, data uint16) (fd int, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fd, ok = p.events[portKey(port, data)]
	return fd, ok
}

// SetFailRegister makes every later registration fail with err (nil:
// succeed again).
func (p *FakePlatform) SetFailRegister(err error) {
	p.mu.Lock()
	p.failRegister = err
	p.mu.Unlock()
}

// Registered returns how many ioeventfds are registered.
func (p *FakePlatform) Registered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.events)
}

// Route returns the i-th route allocated.
func (p *FakePlatform) Route(i int) *FakeRoute {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.routes[i]
}
