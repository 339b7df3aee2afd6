package vmm

import (
	"fmt"
	"sync"

	"github.com/colibrivm/colibri/kvm"
	"github.com/colibrivm/colibri/vmm/pci"
	"golang.org/x/sys/unix"
)

// firstMSIGSI is the first GSI handed to MSI routes; 0–23 are the IOAPIC
// pins (and 0–15 the PICs).
const firstMSIGSI = 24

// irqRouter owns the VM's GSI routing table: the legacy irqchip routes plus
// one MSI route per allocated vector. KVM_SET_GSI_ROUTING replaces the whole
// table, so every change rewrites it under mu.
type irqRouter struct {
	vm      *kvm.VM
	mu      sync.Mutex
	msi     map[uint32]pci.MSIMessage
	nextGSI uint32
	maxGSI  uint32
}

func newIRQRouter(vm *kvm.VM) (*irqRouter, error) {
	r := &irqRouter{vm: vm, msi: map[uint32]pci.MSIMessage{}, nextGSI: firstMSIGSI, maxGSI: 1023}
	if err := r.commitLocked(); err != nil {
		return nil, err
	}
	return r, nil
}

// legacyRoutes routes GSI 0–15 to the PICs and GSI 0–23 to the IOAPIC, with
// the PIT's IRQ 0 on IOAPIC pin 2 as the MADT's interrupt source override
// tells the guest.
func legacyRoutes() []kvm.IRQRoute {
	var rs []kvm.IRQRoute
	for gsi := uint32(0); gsi < 16; gsi++ {
		chip, pin := uint32(kvm.IRQChipPICMaster), gsi
		if gsi >= 8 {
			chip, pin = kvm.IRQChipPICSlave, gsi-8
		}
		rs = append(rs, kvm.IRQRoute{GSI: gsi, Type: kvm.RouteIRQChip, IRQChip: chip, Pin: pin})
	}
	for gsi := uint32(0); gsi < 24; gsi++ {
		switch gsi {
		case 0:
			rs = append(rs, kvm.IRQRoute{GSI: 0, Type: kvm.RouteIRQChip, IRQChip: kvm.IRQChipIOAPIC, Pin: 2})
		case 2:
		default:
			rs = append(rs, kvm.IRQRoute{GSI: gsi, Type: kvm.RouteIRQChip, IRQChip: kvm.IRQChipIOAPIC, Pin: gsi})
		}
	}
	return rs
}

func (r *irqRouter) commitLocked() error {
	rs := legacyRoutes()
	for gsi, m := range r.msi {
		rs = append(rs, kvm.IRQRoute{GSI: gsi, Type: kvm.RouteMSI, MSIAddr: m.Address, MSIData: m.Data})
	}
	return r.vm.SetGSIRouting(rs)
}

// AllocateMSI implements pci.Platform.
func (r *irqRouter) AllocateMSI() (pci.InterruptRoute, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nextGSI > r.maxGSI {
		return nil, fmt.Errorf("out of GSIs for MSI vectors (%d in use)", r.nextGSI-firstMSIGSI)
	}
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd for an MSI vector: %w", err)
	}
	gsi := r.nextGSI
	// Route it somewhere harmless until the guest programs it, so the
	// irqfd has a valid target.
	r.msi[gsi] = pci.MSIMessage{Address: 0xfee00000}
	if err := r.commitLocked(); err != nil {
		delete(r.msi, gsi)
		unix.Close(fd)
		return nil, err
	}
	if err := r.vm.IRQFD(fd, gsi); err != nil {
		delete(r.msi, gsi)
		unix.Close(fd)
		return nil, err
	}
	r.nextGSI++
	return &msiRoute{r: r, gsi: gsi, fd: fd}, nil
}

type msiRoute struct {
	r   *irqRouter
	gsi uint32
	fd  int
}

func (m *msiRoute) Program(msg pci.MSIMessage) error {
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	if old, ok := m.r.msi[m.gsi]; ok && old == msg {
		return nil
	}
	m.r.msi[m.gsi] = msg
	return m.r.commitLocked()
}

var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}

func (m *msiRoute) Fire() error {
	if _, err := unix.Write(m.fd, one); err != nil && err != unix.EAGAIN {
		return fmt.Errorf("raising MSI on GSI %d: %w", m.gsi, err)
	}
	return nil
}

func (m *msiRoute) EventFD() int { return m.fd }

func (m *msiRoute) Close() error {
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	err := m.r.vm.RemoveIRQFD(m.fd, m.gsi)
	delete(m.r.msi, m.gsi)
	unix.Close(m.fd)
	return err
}

// RegisterIOEvent implements pci.Platform.
func (v *VM) RegisterIOEvent(addr uint64, length uint32, fd int) error {
	return v.kvm.AddIOEvent(kvm.IOEvent{Addr: addr, Len: length, FD: fd})
}

// UnregisterIOEvent implements pci.Platform.
func (v *VM) UnregisterIOEvent(addr uint64, length uint32, fd int) error {
	return v.kvm.RemoveIOEvent(kvm.IOEvent{Addr: addr, Len: length, FD: fd})
}

// RegisterPortEvent implements pci.Platform.
func (v *VM) RegisterPortEvent(port, data uint16, fd int) error {
	return v.kvm.AddIOEvent(kvm.IOEvent{Addr: uint64(port), Len: 2, FD: fd, PIO: true, Datamatch: true, Data: uint64(data)})
}

// UnregisterPortEvent implements pci.Platform.
func (v *VM) UnregisterPortEvent(port, data uint16, fd int) error {
	return v.kvm.RemoveIOEvent(kvm.IOEvent{Addr: uint64(port), Len: 2, FD: fd, PIO: true, Datamatch: true, Data: uint64(data)})
}

// AllocateMSI implements pci.Platform.
func (v *VM) AllocateMSI() (pci.InterruptRoute, error) { return v.irqs.AllocateMSI() }
