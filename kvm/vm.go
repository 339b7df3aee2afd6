package kvm

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VM is one KVM virtual machine.
type VM struct {
	fd       int
	sys      *System
	mmapSize int
}

// FD returns the VM file descriptor.
func (vm *VM) FD() int { return vm.fd }

// Close closes the VM file descriptor. The kernel frees the VM when every
// vCPU fd is closed too.
func (vm *VM) Close() error {
	if vm.fd < 0 {
		return nil
	}
	err := unix.Close(vm.fd)
	vm.fd = -1
	return err
}

// SetUserMemoryRegion maps size bytes of host memory at hostAddr into the
// guest at guestAddr, in memory slot slot.
func (vm *VM) SetUserMemoryRegion(slot uint32, guestAddr, size uint64, hostAddr uintptr) error {
	r := userspaceMemoryRegion{Slot: slot, GuestPhysAddr: guestAddr, MemorySize: size, UserspaceAddr: uint64(hostAddr)}
	_, err := ioctl("KVM_SET_USER_MEMORY_REGION", vm.fd, ioSetUserMemory, uintptr(unsafe.Pointer(&r)))
	return err
}

// SetTSSAddr places the three-page TSS region Intel VMX needs.
func (vm *VM) SetTSSAddr(addr uint64) error {
	_, err := ioctl("KVM_SET_TSS_ADDR", vm.fd, ioSetTSSAddr, uintptr(addr))
	return err
}

// SetIdentityMapAddr places the one-page identity map Intel VMX needs.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	_, err := ioctl("KVM_SET_IDENTITY_MAP_ADDR", vm.fd, ioSetIdentityMapAddr, uintptr(unsafe.Pointer(&addr)))
	return err
}

// CreateIRQChip creates the in-kernel PIC, IOAPIC and local APICs.
func (vm *VM) CreateIRQChip() error {
	_, err := ioctl("KVM_CREATE_IRQCHIP", vm.fd, ioCreateIRQChip, 0)
	return err
}

// CreatePIT2 creates the in-kernel i8254 PIT.
func (vm *VM) CreatePIT2() error {
	var cfg [64]byte
	_, err := ioctl("KVM_CREATE_PIT2", vm.fd, ioCreatePIT2, uintptr(unsafe.Pointer(&cfg[0])))
	return err
}

// IRQLine sets the level of an interrupt line (GSI) of the in-kernel irqchip.
func (vm *VM) IRQLine(gsi uint32, level bool) error {
	var v struct{ irq, level uint32 }
	v.irq = gsi
	if level {
		v.level = 1
	}
	_, err := ioctl("KVM_IRQ_LINE", vm.fd, ioIRQLine, uintptr(unsafe.Pointer(&v)))
	return err
}

// Route kinds for GSI routing entries.
const (
	RouteIRQChip uint32 = 1
	RouteMSI     uint32 = 2
)

// IRQ chips addressed by RouteIRQChip entries.
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// IRQRoute is one GSI routing entry (struct kvm_irq_routing_entry).
type IRQRoute struct {
	GSI  uint32
	Type uint32
	// For RouteIRQChip: the chip and its pin.
	IRQChip, Pin uint32
	// For RouteMSI: the message.
	MSIAddr uint64
	MSIData uint32
}

// SetGSIRouting replaces the VM's whole GSI routing table.
func (vm *VM) SetGSIRouting(routes []IRQRoute) error {
	const entrySize = 48
	buf := make([]byte, 8+entrySize*len(routes))
	le := func(off int, v uint32) { *(*uint32)(unsafe.Pointer(&buf[off])) = v }
	le(0, uint32(len(routes)))
	for i, r := range routes {
		o := 8 + i*entrySize
		le(o, r.GSI)
		le(o+4, r.Type)
		switch r.Type {
		case RouteIRQChip:
			le(o+16, r.IRQChip)
			le(o+20, r.Pin)
		case RouteMSI:
			le(o+16, uint32(r.MSIAddr))
			le(o+20, uint32(r.MSIAddr>>32))
			le(o+24, r.MSIData)
		default:
			return fmt.Errorf("KVM_SET_GSI_ROUTING: route for GSI %d has unknown type %d", r.GSI, r.Type)
		}
	}
	_, err := ioctl("KVM_SET_GSI_ROUTING", vm.fd, ioSetGSIRouting, uintptr(unsafe.Pointer(&buf[0])))
	return err
}

// IRQFD binds eventfd fd to gsi: a write to fd raises the interrupt in the
// kernel, without a VM exit or a trip through userspace.
func (vm *VM) IRQFD(fd int, gsi uint32) error {
	v := irqfd{FD: uint32(fd), GSI: gsi}
	_, err := ioctl("KVM_IRQFD", vm.fd, ioIRQFD, uintptr(unsafe.Pointer(&v)))
	return err
}

// RemoveIRQFD undoes IRQFD.
func (vm *VM) RemoveIRQFD(fd int, gsi uint32) error {
	const deassign = 1
	v := irqfd{FD: uint32(fd), GSI: gsi, Flags: deassign}
	_, err := ioctl("KVM_IRQFD(deassign)", vm.fd, ioIRQFD, uintptr(unsafe.Pointer(&v)))
	return err
}

// IOEventFD flags.
const (
	ioeventDatamatch = 1 << 0
	ioeventPIO       = 1 << 1
	ioeventDeassign  = 1 << 2
)

// IOEvent describes one KVM_IOEVENTFD registration: a guest write of Len
// bytes to Addr signals FD instead of exiting to userspace.
type IOEvent struct {
	Addr uint64
	Len  uint32
	FD   int
	// PIO selects port I/O instead of MMIO.
	PIO bool
	// Datamatch, if set, restricts the match to writes of Data.
	Datamatch bool
	Data      uint64
}

func (e IOEvent) raw(extra uint32) ioeventfd {
	v := ioeventfd{Addr: e.Addr, Len: e.Len, FD: int32(e.FD), Flags: extra, Datamatch: e.Data}
	if e.PIO {
		v.Flags |= ioeventPIO
	}
	if e.Datamatch {
		v.Flags |= ioeventDatamatch
	}
	return v
}

// AddIOEvent registers an ioeventfd.
func (vm *VM) AddIOEvent(e IOEvent) error {
	v := e.raw(0)
	_, err := ioctl("KVM_IOEVENTFD", vm.fd, ioIOEventFD, uintptr(unsafe.Pointer(&v)))
	return err
}

// RemoveIOEvent removes an ioeventfd registration.
func (vm *VM) RemoveIOEvent(e IOEvent) error {
	v := e.raw(ioeventDeassign)
	_, err := ioctl("KVM_IOEVENTFD(deassign)", vm.fd, ioIOEventFD, uintptr(unsafe.Pointer(&v)))
	return err
}

// EnableCap enables a VM capability with its arguments.
func (vm *VM) EnableCap(c Capability, args ...uint64) error {
	v := enableCap{Cap: uint32(c)}
	copy(v.Args[:], args)
	_, err := ioctl("KVM_ENABLE_CAP("+c.String()+")", vm.fd, ioEnableCap, uintptr(unsafe.Pointer(&v)))
	return err
}

// StatsFD returns a new binary stats file descriptor for the VM.
func (vm *VM) StatsFD() (int, error) {
	fd, err := ioctl("KVM_GET_STATS_FD(vm)", vm.fd, ioGetStatsFD, 0)
	return int(fd), err
}

// CreateVCPU creates vCPU id and maps its kvm_run page. Call it on the OS
// thread that will run the vCPU.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctl(fmt.Sprintf("KVM_CREATE_VCPU(%d)", id), vm.fd, ioCreateVCPU, uintptr(id))
	if err != nil {
		return nil, err
	}
	run, err := unix.Mmap(int(fd), 0, vm.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("mapping kvm_run of vCPU %d: %w", id, err)
	}
	return &VCPU{fd: int(fd), id: id, runPage: run, run: (*runData)(unsafe.Pointer(&run[0]))}, nil
}
