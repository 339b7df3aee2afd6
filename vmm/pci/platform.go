package pci

// MSIMessage is what a guest programs into an MSI or MSI-X table entry.
type MSIMessage struct {
	Address uint64
	Data    uint32
}

// InterruptRoute delivers one MSI vector into the guest. On KVM it is a GSI
// routing entry of type MSI with an irqfd bound to it, so raising it is one
// eventfd write and never a VM exit.
type InterruptRoute interface {
	// Program points the route at msg. It is called when the guest writes
	// an MSI-X table entry that is enabled and unmasked.
	Program(msg MSIMessage) error
	// Fire raises the interrupt. It is safe to call from any goroutine.
	Fire() error
	// EventFD returns the eventfd whose write raises the interrupt, for
	// pollers that signal the guest without going through Fire.
	EventFD() int
	// Close releases the route and its eventfd.
	Close() error
}

// Platform is what PCI devices need from the VM that hosts them.
type Platform interface {
	// AllocateMSI returns a new, unprogrammed interrupt route.
	AllocateMSI() (InterruptRoute, error)
	// RegisterIOEvent makes any guest write of length bytes to the MMIO
	// address addr signal the eventfd fd, without a VM exit to userspace.
	RegisterIOEvent(addr uint64, length uint32, fd int) error
	// UnregisterIOEvent undoes RegisterIOEvent.
	UnregisterIOEvent(addr uint64, length uint32, fd int) error
	// RegisterPortEvent makes a guest write of the 16-bit value data to
	// port signal the eventfd fd, without a VM exit to userspace; other
	// writes to port still exit.
	RegisterPortEvent(port, data uint16, fd int) error
	// UnregisterPortEvent undoes RegisterPortEvent.
	UnregisterPortEvent(port, data uint16, fd int) error
}
