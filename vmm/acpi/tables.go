// Package acpi builds the ACPI tables colibri gives an x86-64 guest.
//
// The machine is hardware-reduced ACPI (FADT flag HW_REDUCED_ACPI), as in
// Firecracker and Cloud Hypervisor: the guest gets no SCI, PM timer, PM1 or
// GPE blocks. It powers off by writing the sleep-control register and
// resets through the reset register, both I/O ports the VMM chooses.
//
// Build returns one image holding, 16-byte aligned and in this order:
//
//	RSDP  revision 2, pointing at the XSDT
//	DSDT  \_S5, \_SB.PCI0 (PCIe host bridge), optionally \_SB.COM1 and
//	      a power button (\_SB.PWRB, signalled through \_SB.GED0)
//	FACP  FADT revision 6.5, pointing at the DSDT
//	APIC  MADT: one local APIC per vCPU, the IOAPIC, IRQ0→GSI2, LINT1 NMI
//	XSDT  pointing at the FADT and the MADT
//
// A hardware-reduced machine has no fixed power button (FADT PWR_BUTTON
// says so), so a power button, if asked for, is a control-method one:
// \_SB.PWRB (PNP0C0C, bound by Linux's button driver, which reports
// KEY_POWER) plus a Generic Event Device \_SB.GED0 (ACPI0013, bound by
// Linux's built-in evged driver) whose one interrupt is an edge-triggered,
// active-high IOAPIC input and whose _EVT method notifies \_SB.PWRB with
// 0x80 when that interrupt fires. The VMM presses the button by pulsing
// the line: raise it, then lower it.
//
// The VMM copies the image to guest memory at the base it passed to Build
// (0xE0000 lets the legacy RSDP scan find it too) and gives the guest the
// RSDP address in boot_params.acpi_rsdp_addr.
package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// SleepTypeS5 is the SLP_TYP value \_S5 declares. To power off, the guest
// writes SleepControlValue(SleepTypeS5), that is 0x34, to the
// sleep-control port.
const SleepTypeS5 = 5

// Layout of the 8-bit sleep-control register (ACPI 6.5, 4.8.3.7).
const (
	// SleepTypeShift is the position of SLP_TYPx (bits 2–4).
	SleepTypeShift = 2
	// SleepTypeMask selects SLP_TYPx.
	SleepTypeMask = 0x1c
	// SleepEnable is SLP_EN (bit 5): the guest asks to enter the state.
	SleepEnable = 0x20
)

// WakeStatus is WAK_STS, bit 7 of the sleep-status register. Before
// sleeping, the guest writes it to the sleep-status port to clear it; a VMM
// that never wakes the guest can read the port as 0 and ignore the write.
const WakeStatus = 0x80

// SleepControlValue returns what the guest writes to the sleep-control
// register to enter the sleep state with SLP_TYP slpTyp.
func SleepControlValue(slpTyp uint8) uint8 {
	return (slpTyp<<SleepTypeShift)&SleepTypeMask | SleepEnable
}

// DecodeSleepControl splits a byte the guest wrote to the sleep-control
// register into SLP_TYP and SLP_EN.
func DecodeSleepControl(v uint8) (slpTyp uint8, enable bool) {
	return (v & SleepTypeMask) >> SleepTypeShift, v&SleepEnable != 0
}

// Fixed addresses of the interrupt controllers.
const (
	// LocalAPICAddr is the local APICs' MMIO base the MADT declares.
	LocalAPICAddr = 0xfee00000
	// DefaultIOAPICAddr is the IOAPIC base used when Config.IOAPICAddr is 0.
	DefaultIOAPICAddr = 0xfec00000
)

// IOAPICPins is the number of inputs of the IOAPIC the MADT declares (KVM's
// in-kernel IOAPIC has 24): its GSIs are 0..IOAPICPins-1.
const IOAPICPins = 24

// pitGSI is the GSI the MADT's interrupt source override gives ISA IRQ 0.
const pitGSI = 2

// MaxSize bounds the image Build returns: the 128 KiB from 0xE0000 to the
// end of the BIOS area.
const MaxSize = 128 << 10

// Config describes the machine the tables declare.
type Config struct {
	// CPUs is the number of vCPUs, 1–255; their APIC ids and ACPI
	// processor UIDs are 0..CPUs-1.
	CPUs int
	// IOAPICAddr is the IOAPIC's MMIO base (0: DefaultIOAPICAddr); it must
	// be below 4 GiB. IOAPICID is its APIC id; its GSI base is 0.
	IOAPICAddr uint64
	IOAPICID   uint8
	// PCIMMIOBase and PCIMMIOSize give the 32-bit PCI memory window the
	// host bridge's _CRS declares; it must be non-empty and end at or
	// below 4 GiB.
	PCIMMIOBase, PCIMMIOSize uint64
	// PCIMMIO64Base and PCIMMIO64Size give an optional 64-bit window at or
	// above 4 GiB; size 0 declares none.
	PCIMMIO64Base, PCIMMIO64Size uint64
	// SleepControlPort, SleepStatusPort and ResetPort are the I/O ports of
	// the FADT's 8-bit SLEEP_CONTROL_REG, SLEEP_STATUS_REG and RESET_REG.
	// None may be 0, and the sleep ports must lie outside the legacy
	// ranges ACPICA refuses to touch (0x00–0xFF, 0x4D0–0x4D1, 0xCF8–0xCFF).
	SleepControlPort, SleepStatusPort, ResetPort uint16
	// ResetValue is the byte the guest writes to ResetPort to reset.
	ResetValue uint8
	// Serial declares COM1 (\_SB.COM1, PNP0501, I/O 0x3F8–0x3FF, IRQ 4).
	Serial bool
	// I8042 sets the FADT's "8042 present" boot flag, so the guest probes
	// a PS/2 controller at ports 0x60/0x64. Leave it false unless the VMM
	// emulates one well enough to be probed.
	I8042 bool
	// ECAMBase, if not 0, is the guest address of the PCI ECAM window for
	// bus 0 (1 MiB), declared in an MCFG table.
	ECAMBase uint64
	// PowerButtonGSI, if not 0, declares a power button whose presses
	// arrive as edges on this IOAPIC input (see the package comment).
	// Nothing else may use it: not 2 (the PIT's), not COM1's 4 when
	// Serial is set, and below IOAPICPins.
	PowerButtonGSI uint32
}

// Validate reports the first problem with c, naming the field.
func (c Config) Validate() error {
	const fourGiB = 1 << 32
	switch {
	case c.CPUs < 1 || c.CPUs > 255:
		return fmt.Errorf("ACPI config: CPUs is %d, want 1 to 255 (xAPIC ids)", c.CPUs)
	case c.IOAPICAddr >= fourGiB:
		return fmt.Errorf("ACPI config: IOAPICAddr %#x is not below 4 GiB", c.IOAPICAddr)
	case c.SleepControlPort == 0:
		return errors.New("ACPI config: SleepControlPort is 0; pick an unused I/O port")
	case c.SleepStatusPort == 0:
		return errors.New("ACPI config: SleepStatusPort is 0; pick an unused I/O port")
	case c.ResetPort == 0:
		return errors.New("ACPI config: ResetPort is 0; pick an unused I/O port")
	case blockedPort(c.SleepControlPort) != "":
		return fmt.Errorf("ACPI config: SleepControlPort %#x is in %s, where ACPICA refuses register access; pick a port from 0x100 up", c.SleepControlPort, blockedPort(c.SleepControlPort))
	case blockedPort(c.SleepStatusPort) != "":
		return fmt.Errorf("ACPI config: SleepStatusPort %#x is in %s, where ACPICA refuses register access; pick a port from 0x100 up", c.SleepStatusPort, blockedPort(c.SleepStatusPort))
	case c.ECAMBase%(1<<20) != 0 || c.ECAMBase >= fourGiB:
		return fmt.Errorf("ACPI config: ECAMBase %#x is not 1 MiB aligned below 4 GiB", c.ECAMBase)
	case c.PowerButtonGSI >= IOAPICPins:
		return fmt.Errorf("ACPI config: PowerButtonGSI %d is not an IOAPIC input (0 to %d)", c.PowerButtonGSI, IOAPICPins-1)
	case c.PowerButtonGSI == pitGSI:
		return fmt.Errorf("ACPI config: PowerButtonGSI %d is the PIT's (IRQ 0 is overridden to GSI 2); pick an unused IOAPIC input", c.PowerButtonGSI)
	case c.Serial && c.PowerButtonGSI == com1IRQ:
		return fmt.Errorf("ACPI config: PowerButtonGSI %d is COM1's IRQ; pick an unused IOAPIC input", c.PowerButtonGSI)
	case c.PCIMMIOSize == 0:
		return errors.New("ACPI config: PCIMMIOSize is 0; the 32-bit PCI window must not be empty")
	case c.PCIMMIOBase >= fourGiB || c.PCIMMIOSize > fourGiB-c.PCIMMIOBase:
		return fmt.Errorf("ACPI config: 32-bit PCI window [%#x, +%#x) does not end below 4 GiB", c.PCIMMIOBase, c.PCIMMIOSize)
	case c.PCIMMIO64Size != 0 && c.PCIMMIO64Base < fourGiB:
		return fmt.Errorf("ACPI config: 64-bit PCI window base %#x is below 4 GiB", c.PCIMMIO64Base)
	case c.PCIMMIO64Size != 0 && c.PCIMMIO64Size-1 > ^uint64(0)-c.PCIMMIO64Base:
		return fmt.Errorf("ACPI config: 64-bit PCI window [%#x, +%#x) wraps around", c.PCIMMIO64Base, c.PCIMMIO64Size)
	}
	return nil
}

// blockedPort names the legacy range port falls in if ACPICA's port
// validation (which Linux applies to the sleep registers, though not to the
// reset register) may refuse it: a conservative superset of ACPICA's
// protected ports, all of 0x00–0xFF plus the ELCR and PCI config ports.
func blockedPort(port uint16) string {
	switch {
	case port <= 0xff:
		return "the legacy ISA range 0x00-0xff"
	case port >= 0x4d0 && port <= 0x4d1:
		return "the PIC edge/level registers 0x4d0-0x4d1"
	case port >= 0xcf8 && port <= 0xcff:
		return "the PCI configuration ports 0xcf8-0xcff"
	}
	return ""
}

// Identity of the tables.
const (
	oemID       = "COLIBR"   // 6 bytes
	oemTableID  = "COLIBRI " // 8 bytes
	creatorID   = "CLBR"
	hypervisor  = "COLIBRI\x00" // FADT Hypervisor Vendor Identity, 8 bytes
	headerLen   = 36
	rsdpLen     = 36
	tableAlign  = 16
	fadtLen     = 276
	fadtMajor   = 6
	fadtMinor   = 5
	madtRev     = 5
	dsdtRev     = 2 // 64-bit AML integers
	xsdtRev     = 1
	creatorRev  = 1
	oemRevision = 1
)

// Build lays the tables out from guest physical address base, which must
// be 16-byte aligned, and returns the bytes to copy there and the RSDP's
// guest address. The image is at most MaxSize bytes.
func Build(cfg Config, base uint64) (image []byte, rsdpAddr uint64, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, 0, err
	}
	if base%tableAlign != 0 {
		return nil, 0, fmt.Errorf("ACPI tables: base %#x is not %d-byte aligned", base, tableAlign)
	}
	if cfg.IOAPICAddr == 0 {
		cfg.IOAPICAddr = DefaultIOAPICAddr
	}
	dsdt, err := buildDSDT(cfg)
	if err != nil {
		return nil, 0, fmt.Errorf("building the DSDT: %w", err)
	}
	var img []byte
	place := func(t []byte) uint64 {
		for len(img)%tableAlign != 0 {
			img = append(img, 0)
		}
		at := base + uint64(len(img))
		img = append(img, t...)
		return at
	}
	rsdpAt := place(make([]byte, rsdpLen))
	dsdtAt := place(dsdt)
	fadtAt := place(buildFADT(cfg, dsdtAt))
	madtAt := place(buildMADT(cfg))
	entries := []uint64{fadtAt, madtAt}
	if cfg.ECAMBase != 0 {
		entries = append(entries, place(buildMCFG(cfg.ECAMBase)))
	}
	xsdtAt := place(buildXSDT(entries...))
	copy(img[rsdpAt-base:], buildRSDP(xsdtAt))
	if len(img) > MaxSize {
		return nil, 0, fmt.Errorf("ACPI tables take %d bytes, more than the %d available", len(img), MaxSize)
	}
	if base > ^uint64(0)-uint64(len(img)) {
		return nil, 0, fmt.Errorf("ACPI tables: %d bytes at %#x wrap around", len(img), base)
	}
	return img, rsdpAt, nil
}

// header returns a table of headerLen+bodyLen bytes with its header filled
// in; finish sets the length and checksum once the body is complete.
func header(sig string, rev uint8, bodyLen int) []byte {
	t := make([]byte, headerLen+bodyLen)
	copy(t[0:4], sig)
	t[8] = rev
	copy(t[10:16], oemID)
	copy(t[16:24], oemTableID)
	binary.LittleEndian.PutUint32(t[24:], oemRevision)
	copy(t[28:32], creatorID)
	binary.LittleEndian.PutUint32(t[32:], creatorRev)
	return t
}

// finish sets a table's length and checksum fields.
func finish(t []byte) []byte {
	binary.LittleEndian.PutUint32(t[4:], uint32(len(t)))
	t[9] = 0
	t[9] = checksum(t)
	return t
}

// checksum returns the byte that makes b sum to zero (mod 256).
func checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}

// buildRSDP returns a revision-2 RSDP: the first 20 bytes carry the ACPI
// 1.0 checksum, all 36 the extended one; the 32-bit RSDT address is 0.
func buildRSDP(xsdt uint64) []byte {
	r := make([]byte, rsdpLen)
	copy(r, "RSD PTR ")
	copy(r[9:15], oemID)
	r[15] = 2
	binary.LittleEndian.PutUint32(r[20:], rsdpLen)
	binary.LittleEndian.PutUint64(r[24:], xsdt)
	r[8] = checksum(r[:20])
	r[32] = checksum(r)
	return r
}

// buildMCFG declares the ECAM (MMCONFIG) window of PCI segment 0, bus 0.
// Linux uses it only if the e820 map reserves the window too.
func buildMCFG(base uint64) []byte {
	m := header("MCFG", 1, 8+16)
	binary.LittleEndian.PutUint64(m[headerLen+8:], base)
	// Segment 0, start bus 0, end bus 0.
	return finish(m)
}

func buildXSDT(entries ...uint64) []byte {
	x := header("XSDT", xsdtRev, 8*len(entries))
	for i, e := range entries {
		binary.LittleEndian.PutUint64(x[headerLen+8*i:], e)
	}
	return finish(x)
}

// FADT field offsets (ACPI 6.5, table 5.9).
const (
	fadtDSDT        = 40
	fadtBootArch    = 109
	fadtFlags       = 112
	fadtResetReg    = 116
	fadtResetValue  = 128
	fadtMinorVer    = 131
	fadtXDSDT       = 140
	fadtSleepCtl    = 244
	fadtSleepStatus = 256
	fadtHypervisor  = 268
)

// FADT Flags and IA-PC boot architecture flags.
const (
	fadtWBINVD        = 1 << 0
	fadtNoPowerButton = 1 << 4 // PWR_BUTTON: no fixed-feature power button
	fadtNoSleepButton = 1 << 5 // SLP_BUTTON: no fixed-feature sleep button
	fadtResetRegSup   = 1 << 10
	fadtHWReduced     = 1 << 20

	bootLegacyDevices = 1 << 0 // not set: no LPC/ISA devices the OS cannot enumerate
	boot8042          = 1 << 1
	bootVGANotPresent = 1 << 2
	bootMSINotSupp    = 1 << 3 // never set: PCI devices use MSI-X
	bootNoASPM        = 1 << 4
	bootNoCMOSRTC     = 1 << 5
)

// gasIO returns an 8-bit Generic Address Structure for an I/O port with
// byte access.
func gasIO(port uint16) []byte {
	g := make([]byte, 12)
	g[0] = 1 // address space: system I/O
	g[1] = 8 // register bit width
	g[2] = 0 // bit offset
	g[3] = 1 // access size: byte
	binary.LittleEndian.PutUint64(g[4:], uint64(port))
	return g
}

func buildFADT(cfg Config, dsdt uint64) []byte {
	f := header("FACP", fadtMajor, fadtLen-headerLen)
	le := binary.LittleEndian
	if dsdt < 1<<32 {
		le.PutUint32(f[fadtDSDT:], uint32(dsdt))
	}
	le.PutUint64(f[fadtXDSDT:], dsdt)
	boot := uint16(bootVGANotPresent | bootNoASPM | bootNoCMOSRTC)
	if cfg.I8042 {
		boot |= boot8042
	}
	le.PutUint16(f[fadtBootArch:], boot)
	le.PutUint32(f[fadtFlags:], fadtWBINVD|fadtNoPowerButton|fadtNoSleepButton|fadtResetRegSup|fadtHWReduced)
	copy(f[fadtResetReg:], gasIO(cfg.ResetPort))
	f[fadtResetValue] = cfg.ResetValue
	f[fadtMinorVer] = fadtMinor
	copy(f[fadtSleepCtl:], gasIO(cfg.SleepControlPort))
	copy(f[fadtSleepStatus:], gasIO(cfg.SleepStatusPort))
	copy(f[fadtHypervisor:], hypervisor)
	return finish(f)
}

// MADT structure types and flags (ACPI 6.5, 5.2.12).
const (
	madtLocalAPIC     = 0
	madtIOAPIC        = 1
	madtIntOverride   = 2
	madtLocalAPICNMI  = 4
	madtPCATCompat    = 1 << 0
	madtLAPICEnabled  = 1 << 0
	madtAllProcessors = 0xff
)

// buildMADT declares the local APICs, the IOAPIC, the PIT's IRQ 0 on GSI 2
// and LINT1 as NMI.
//
// PCAT_COMPAT is set because it is true: KVM's in-kernel irqchip has the
// dual 8259 PICs besides the IOAPIC (the VMM routes GSI 0–15 to them). It
// tells the guest to mask them before using the IOAPIC, which Linux does
// in any case. No override is given for IRQ 9: a hardware-reduced machine
// has no SCI.
func buildMADT(cfg Config) []byte {
	le := binary.LittleEndian
	m := header("APIC", madtRev, 8)
	le.PutUint32(m[headerLen:], LocalAPICAddr)
	le.PutUint32(m[headerLen+4:], madtPCATCompat)
	for i := 0; i < cfg.CPUs; i++ {
		// type, length, ACPI processor UID, APIC id, flags (4 bytes)
		m = append(m, madtLocalAPIC, 8, byte(i), byte(i))
		m = le.AppendUint32(m, madtLAPICEnabled)
	}
	// type, length, IOAPIC id, reserved, address, GSI base
	m = append(m, madtIOAPIC, 12, cfg.IOAPICID, 0)
	m = le.AppendUint32(m, uint32(cfg.IOAPICAddr))
	m = le.AppendUint32(m, 0)
	// type, length, bus (ISA), source IRQ, GSI, flags (conform to the bus:
	// edge, active high)
	m = append(m, madtIntOverride, 10, 0, 0)
	m = le.AppendUint32(m, 2)
	m = le.AppendUint16(m, 0)
	// type, length, processor UID (all), flags, LINT#
	m = append(m, madtLocalAPICNMI, 6, madtAllProcessors, 0, 0, 1)
	return finish(m)
}

// COM1's resources.
const (
	com1Port = 0x3f8
	com1IRQ  = 4
)

// buildDSDT encodes the namespace:
//
//	Name (\_S5, Package (4) { 5, 5, 0, 0 })
//	Scope (\_SB) {
//	    Device (PCI0) { _HID PNP0A08, _CID PNP0A03, _SEG, _UID, _BBN 0, _CRS }
//	    Device (COM1) { _HID PNP0501, _UID 1, _CRS }   // if cfg.Serial
//	    Device (PWRB) { _HID PNP0C0C, _UID 0 }         // if cfg.PowerButtonGSI
//	    Device (GED0) {                                // if cfg.PowerButtonGSI
//	        _HID "ACPI0013", _UID 0
//	        _CRS { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { GSI } }
//	        Method (_EVT, 1) { If (LEqual (Arg0, GSI)) { Notify (\_SB.PWRB, 0x80) } }
//	    }
//	}
//
// The host bridge has no _ADR: a device names itself with _HID or _ADR,
// not both (ACPI 6.5, 6.1; iasl warns), and Linux finds a root bridge by
// _HID/_CID, _SEG and _BBN. It has no _OSC: Linux then keeps PCIe native features
// (ASPM, hot-plug, AER) off and still binds the bridge; MSI-X needs no
// _OSC grant.
func buildDSDT(cfg Config) ([]byte, error) {
	crs := (&resources{}).
		word(spaceBus, 0, 0, 0).
		io(0xcf8, 8).
		word(spaceIO, ioEntireRange, 0x0000, 0x0cf7).
		word(spaceIO, ioEntireRange, 0x0d00, 0xffff).
		dword(spaceMemory, memReadWrite, uint32(cfg.PCIMMIOBase), uint32(cfg.PCIMMIOBase+cfg.PCIMMIOSize-1))
	if cfg.PCIMMIO64Size != 0 {
		crs.qword(spaceMemory, memReadWrite, cfg.PCIMMIO64Base, cfg.PCIMMIO64Base+cfg.PCIMMIO64Size-1)
	}
	pci := (&aml{}).
		nameObj("_HID", (&aml{}).eisaID("PNP0A08")).
		nameObj("_CID", (&aml{}).eisaID("PNP0A03")).
		nameObj("_SEG", (&aml{}).integer(0)).
		nameObj("_UID", (&aml{}).integer(0)).
		nameObj("_BBN", (&aml{}).integer(0)).
		nameObj("_CRS", (&aml{}).buffer(crs.end()))
	sb := (&aml{}).device("PCI0", pci)
	if cfg.Serial {
		com := (&aml{}).
			nameObj("_HID", (&aml{}).eisaID("PNP0501")).
			nameObj("_UID", (&aml{}).integer(1)).
			nameObj("_CRS", (&aml{}).buffer((&resources{}).io(com1Port, 8).irq(com1IRQ).end()))
		sb.device("COM1", com)
	}
	if cfg.PowerButtonGSI != 0 {
		powerButton(sb, cfg.PowerButtonGSI)
	}
	body, err := (&aml{}).
		nameObj(`\_S5`, (&aml{}).packageOf(SleepTypeS5, SleepTypeS5, 0, 0)).
		scope(`\_SB`, sb).
		result()
	if err != nil {
		return nil, err
	}
	return finish(append(header("DSDT", dsdtRev, 0), body...)), nil
}

// notifyStatusChange is the Notify value for a button: "status change",
// the button was pressed (ACPI 6.5, 5.6.6; Linux's button driver turns
// it into a KEY_POWER press and release).
const notifyStatusChange = 0x80

// powerButton appends \_SB.PWRB and the Generic Event Device that
// notifies it when gsi fires. Linux's evged driver runs _EVT with the GSI
// in Arg0 (a method _Exx named after an edge GSI below 256 would take
// precedence; there is none).
func powerButton(sb *aml, gsi uint32) {
	btn := (&aml{}).
		nameObj("_HID", (&aml{}).eisaID("PNP0C0C")).
		nameObj("_UID", (&aml{}).integer(0))
	sb.device("PWRB", btn)
	evt := (&aml{}).ifThen(
		(&aml{}).lequal((&aml{}).arg(0), (&aml{}).integer(uint64(gsi))),
		(&aml{}).notify(`\_SB.PWRB`, notifyStatusChange))
	ged := (&aml{}).
		nameObj("_HID", (&aml{}).str("ACPI0013")).
		nameObj("_UID", (&aml{}).integer(0)).
		nameObj("_CRS", (&aml{}).buffer((&resources{}).interrupt(gsi, true, false).end())).
		method("_EVT", 1, false, evt)
	sb.device("GED0", ged)
}
