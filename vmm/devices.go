package vmm

import (
	"sync"
	"time"

	"github.com/colibrivm/colibri/vmm/acpi"
	"github.com/colibrivm/colibri/vmm/serial"
)

// Fixed I/O ports and addresses of colibri's platform devices.
const (
	// Ports of the ACPI sleep control/status and reset registers (FADT).
	sleepControlPort = 0x600
	sleepStatusPort  = 0x601
	resetPort        = 0x602
	resetValue       = 0x0f
	// i8042 data and command/status ports.
	i8042DataPort    = 0x60
	i8042CommandPort = 0x64
	i8042ResetCmd    = 0xfe
	// resetVectorAddr is where a PC's BIOS has its reset vector
	// (F000:FFF0), in the reserved area below 1 MiB.
	resetVectorAddr = 0xffff0
	// BootTimerAddr is the MMIO address the guest's init writes
	// BootTimerMagic to when it starts (as in Firecracker).
	BootTimerAddr  = 0xd000_0000
	BootTimerMagic = 123
)

// uartPorts adapts a UART to the port bus.
type uartPorts struct {
	base uint16
	u    *serial.UART
}

func (p uartPorts) PIORead(port uint16, data []byte) {
	for i := range data {
		data[i] = p.u.Read(port - p.base)
	}
}

func (p uartPorts) PIOWrite(port uint16, data []byte) {
	for _, b := range data {
		p.u.Write(port-p.base, b)
	}
}

// powerDevice decodes the FADT's sleep control and reset registers: S5 ends
// the VM as powered off, a reset write ends it as rebooted.
type powerDevice struct {
	vm *VM
}

func (p powerDevice) PIORead(port uint16, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

func (p powerDevice) PIOWrite(port uint16, data []byte) {
	if len(data) == 0 {
		return
	}
	switch port {
	case sleepControlPort:
		if typ, enable := acpi.DecodeSleepControl(data[0]); enable && typ == acpi.SleepTypeS5 {
			p.vm.stop(ExitPowerOff, nil)
		}
	case resetPort:
		if data[0] == resetValue {
			p.vm.stop(ExitReset, nil)
		}
	}
}

// i8042 is just enough of the PS/2 controller for reboot=k: a reset command
// (0xfe) to port 0x64 ends the VM as rebooted; status reads say "empty".
type i8042 struct {
	vm *VM
}

func (k i8042) PIORead(port uint16, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

func (k i8042) PIOWrite(port uint16, data []byte) {
	if port == i8042CommandPort && len(data) > 0 && data[0] == i8042ResetCmd {
		k.vm.stop(ExitReset, nil)
	}
}

// resetVectorCode stands in for the BIOS at the reset vector: real-mode
// code that sends the i8042 its reset command, which ends the VM as
// rebooted. Linux jumps there (machine_real_restart) when it reboots a
// machine with hardware-reduced ACPI and no EFI, as colibri's, unless
// reboot= says otherwise: without it such a reboot ran into zeroed memory
// and never ended.
var resetVectorCode = []byte{
	0xb0, i8042ResetCmd, // mov al, 0xfe
	0xe6, i8042CommandPort, // out 0x64, al
	0xf4,       // hlt
	0xeb, 0xfd, // jmp back to hlt
}

// bootTimer records when the guest's init wrote the magic byte.
type bootTimer struct {
	start time.Time
	mu    sync.Mutex
	at    time.Duration
}

func (t *bootTimer) write(data []byte) {
	if len(data) == 0 || data[0] != BootTimerMagic {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.at == 0 {
		t.at = time.Since(t.start)
	}
}

func (t *bootTimer) setStart(at time.Time) {
	t.mu.Lock()
	t.start = at
	t.mu.Unlock()
}

func (t *bootTimer) elapsed() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.at
}

// firstOutput wraps the console writer to note when the guest first wrote.
type firstOutput struct {
	w     interface{ Write([]byte) (int, error) }
	start time.Time
	mu    sync.Mutex
	at    time.Duration
}

func (f *firstOutput) Write(p []byte) (int, error) {
	f.mu.Lock()
	if f.at == 0 && len(p) > 0 {
		f.at = time.Since(f.start)
	}
	f.mu.Unlock()
	return f.w.Write(p)
}

func (f *firstOutput) setStart(at time.Time) {
	f.mu.Lock()
	f.start = at
	f.mu.Unlock()
}

func (f *firstOutput) elapsed() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.at
}
