package vmm

import (
	"errors"
	"fmt"
)

// powerButtonGSI is the IOAPIC input of the ACPI power button: the
// Generic Event Device in the DSDT (acpi.Config.PowerButtonGSI) declares
// it edge-triggered and active-high. Nothing else uses it: COM1 is on 4,
// the PIT on 2, PCI devices use MSI-X only, and GSIs 16–23 reach the
// IOAPIC alone (no PIC input behind them).
const powerButtonGSI = 23

// ErrVMStopped is returned by operations on a VM that has stopped.
var ErrVMStopped = errors.New("the VM has stopped")

// PowerButton presses the guest's ACPI power button. What follows is the
// guest's choice: colibri's default initrd prints one line and powers off
// (the VM then ends with ExitPowerOff), a distribution's acpid or systemd
// shuts down, a guest may ignore it. PowerButton returns once the press
// reached the in-kernel IOAPIC, not when the guest reacts: wait on Done.
// Call it between New and the end of Run, from any goroutine, never
// concurrently with Close; once the VM has stopped it returns
// ErrVMStopped.
//
// A press is one edge on powerButtonGSI: the line is raised and lowered
// again with KVM_IRQ_LINE. Lowering matters: KVM's IOAPIC delivers an
// edge input only on a 0→1 change of its request bit, so a line left high
// would swallow every later press. Presses overlapping from several
// goroutines may merge into one, as on a real button.
//
// A press the guest is not ready for is lost, not kept: until the guest
// kernel has bound the Generic Event Device, its IOAPIC input is masked,
// and KVM drops an edge that arrives on a masked input once the line is
// lowered; after that, until the guest has loaded its button driver, the
// guest's ACPI interpreter drops the Notify for want of a handler.
func (v *VM) PowerButton() error {
	select {
	case <-v.stopped:
		return fmt.Errorf("power button: %w", ErrVMStopped)
	default:
	}
	if err := v.kvm.IRQLine(powerButtonGSI, true); err != nil {
		return fmt.Errorf("power button: raising GSI %d: %w", powerButtonGSI, err)
	}
	if err := v.kvm.IRQLine(powerButtonGSI, false); err != nil {
		return fmt.Errorf("power button: lowering GSI %d: %w", powerButtonGSI, err)
	}
	return nil
}
