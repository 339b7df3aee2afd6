// Package acpi builds the ACPI tables colibri gives an x86-64 guest:
// RSDP, XSDT, a hardware-reduced FADT (no SCI, PM timer or PM1 blocks;
// power-off and reset through the sleep-control and reset registers), a MADT
// with one local APIC per vCPU and the IOAPIC, and a DSDT written with a
// small AML encoder that declares the PCI host bridge, COM1 and \_S5.
package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// SleepTypeS5 is the SLP_TYP value \_S5 declares; the guest writes it to
// the sleep-control register to power off.
const SleepTypeS5 = 5

// Sleep-control register layout (ACPI 6.5, 4.8.3.7).
const (
	sleepTypeShift = 2
	sleepTypeMask  = 0x1c
	sleepEnable    = 0x20
)

// DecodeSleepControl splits a sleep-control register write into SLP_TYP and
// SLP_EN.
func DecodeSleepControl(v uint8) (sleepType uint8, enable bool) {
	return (v & sleepTypeMask) >> sleepTypeShift, v&sleepEnable != 0
}

// Config describes the machine the tables declare.
type Config struct {
	// CPUs is the number of vCPUs; their APIC ids are 0..CPUs-1.
	CPUs int
	// IOAPICAddr is the IOAPIC's MMIO base; IOAPICID its id.
	IOAPICAddr uint64
	IOAPICID   uint8
	// PCIMMIOBase and PCIMMIOSize are the 32-bit PCI memory window.
	PCIMMIOBase, PCIMMIOSize uint64
	// PCIMMIO64Base and PCIMMIO64Size are the 64-bit window (size 0: none).
	PCIMMIO64Base, PCIMMIO64Size uint64
	// SleepControlPort, SleepStatusPort and ResetPort are I/O ports of the
	// FADT's registers; ResetValue is what the guest writes to reset.
	SleepControlPort, SleepStatusPort, ResetPort uint16
	ResetValue                                   uint8
	// Serial declares COM1 (0x3f8, IRQ 4) in the DSDT.
	Serial bool
}

func (c Config) validate() error {
	switch {
	case c.CPUs < 1 || c.CPUs > 255:
		return fmt.Errorf("ACPI: %d CPUs: want 1 to 255", c.CPUs)
	case c.SleepControlPort == 0 || c.SleepStatusPort == 0 || c.ResetPort == 0:
		return errors.New("ACPI: sleep-control, sleep-status and reset ports must be set")
	case c.PCIMMIOSize == 0 || c.PCIMMIOBase+c.PCIMMIOSize > 1<<32:
		return fmt.Errorf("ACPI: 32-bit PCI window [%#x, +%#x) must be non-empty and below 4 GiB", c.PCIMMIOBase, c.PCIMMIOSize)
	case c.PCIMMIO64Size != 0 && c.PCIMMIO64Base < 1<<32:
		return fmt.Errorf("ACPI: 64-bit PCI window at %#x is below 4 GiB", c.PCIMMIO64Base)
	}
	return nil
}

const (
	oemID      = "COLIBR"
	oemTableID = "COLIBRI "
	creatorID  = "CLBR"
	headerLen  = 36
)

// MaxSize bounds the image Build returns.
const MaxSize = 128 << 10

// Build lays the tables out from guest physical address base and returns the
// bytes to copy there and the RSDP's guest address.
func Build(cfg Config, base uint64) (image []byte, rsdpAddr uint64, err error) {
	if err := cfg.validate(); err != nil {
		return nil, 0, err
	}
	dsdt, err := buildDSDT(cfg)
	if err != nil {
		return nil, 0, err
	}
	// Layout: RSDP, XSDT, FADT, MADT, DSDT, each 16-byte aligned.
	var img []byte
	place := func(t []byte) uint64 {
		for len(img)%16 != 0 {
			img = append(img, 0)
		}
		at := base + uint64(len(img))
		img = append(img, t...)
		return at
	}
	rsdpAt := place(make([]byte, 36))
	dsdtAt := place(dsdt)
	fadtAt := place(buildFADT(cfg, dsdtAt))
	madtAt := place(buildMADT(cfg))
	xsdt := header("XSDT", 1, 8*2)
	binary.LittleEndian.PutUint64(xsdt[headerLen:], fadtAt)
	binary.LittleEndian.PutUint64(xsdt[headerLen+8:], madtAt)
	finish(xsdt)
	xsdtAt := place(xsdt)
	copy(img[rsdpAt-base:], buildRSDP(xsdtAt))
	if len(img) > MaxSize {
		return nil, 0, fmt.Errorf("ACPI tables are %d bytes, more than %d", len(img), MaxSize)
	}
	return img, rsdpAt, nil
}

// header returns a table of headerLen+bodyLen bytes with its header filled
// in (checksum pending).
func header(sig string, rev uint8, bodyLen int) []byte {
	t := make([]byte, headerLen+bodyLen)
	copy(t[0:4], sig)
	binary.LittleEndian.PutUint32(t[4:], uint32(len(t)))
	t[8] = rev
	copy(t[10:16], oemID)
	copy(t[16:24], oemTableID)
	binary.LittleEndian.PutUint32(t[24:], 1)
	copy(t[28:32], creatorID)
	binary.LittleEndian.PutUint32(t[32:], 1)
	return t
}

// finish sets a table's length and checksum.
func finish(t []byte) {
	binary.LittleEndian.PutUint32(t[4:], uint32(len(t)))
	t[9] = 0
	t[9] = checksum(t)
}

// checksum returns the byte that makes b sum to zero.
func checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}

func buildRSDP(xsdt uint64) []byte {
	r := make([]byte, 36)
	copy(r, "RSD PTR ")
	copy(r[9:15], oemID)
	r[15] = 2 // ACPI 2.0+: XSDT
	binary.LittleEndian.PutUint32(r[20:], 36)
	binary.LittleEndian.PutUint64(r[24:], xsdt)
	r[8] = checksum(r[:20])
	r[32] = checksum(r)
	return r
}

// FADT flags and boot architecture flags.
const (
	fadtWBINVD        = 1 << 0
	fadtPowerButton   = 1 << 4 // no fixed power button
	fadtSleepButton   = 1 << 5 // no fixed sleep button
	fadtResetRegSup   = 1 << 10
	fadtHWReduced     = 1 << 20
	bootVGANotPresent = 1 << 2
	bootNoCMOSRTC     = 1 << 5
)

// gas encodes an 8-bit Generic Address Structure in system I/O space.
func gas(port uint16) []byte {
	g := make([]byte, 12)
	g[0] = 1 // system I/O
	g[1] = 8 // bit width
	g[3] = 1 // byte access
	binary.LittleEndian.PutUint64(g[4:], uint64(port))
	return g
}

func buildFADT(cfg Config, dsdt uint64) []byte {
	f := header("FACP", 6, 276-headerLen)
	le := binary.LittleEndian
	le.PutUint32(f[40:], uint32(dsdt))
	le.PutUint16(f[109:], bootVGANotPresent|bootNoCMOSRTC)
	le.PutUint32(f[112:], fadtWBINVD|fadtPowerButton|fadtSleepButton|fadtResetRegSup|fadtHWReduced)
	copy(f[116:], gas(cfg.ResetPort))
	f[128] = cfg.ResetValue
	f[131] = 5 // FADT minor version: ACPI 6.5
	le.PutUint64(f[140:], dsdt)
	copy(f[244:], gas(cfg.SleepControlPort))
	copy(f[256:], gas(cfg.SleepStatusPort))
	copy(f[268:], "COLIBRI\x00")
	finish(f)
	return f
}

// MADT entry types.
const (
	madtLocalAPIC  = 0
	madtIOAPIC     = 1
	madtOverride   = 2
	madtLAPICNMI   = 4
	madtPCATCompat = 1 << 0
)

func buildMADT(cfg Config) []byte {
	m := header("APIC", 5, 8)
	le := binary.LittleEndian
	le.PutUint32(m[36:], 0xfee00000)
	le.PutUint32(m[40:], madtPCATCompat)
	for i := 0; i < cfg.CPUs; i++ {
		m = append(m, madtLocalAPIC, 8, byte(i), byte(i), 1, 0, 0, 0)
	}
	io := []byte{madtIOAPIC, 12, cfg.IOAPICID, 0}
	io = le.AppendUint32(io, uint32(cfg.IOAPICAddr))
	io = le.AppendUint32(io, 0)
	m = append(m, io...)
	// The PIT's IRQ 0 is wired to IOAPIC pin 2.
	m = append(m, madtOverride, 10, 0, 0)
	m = le.AppendUint32(m, 2)
	m = le.AppendUint16(m, 0)
	// LINT1 of every local APIC is NMI.
	m = append(m, madtLAPICNMI, 6, 0xff, 0, 0, 1)
	finish(m)
	return m
}

func buildDSDT(cfg Config) ([]byte, error) {
	crs := (&resources{}).
		word(spaceBus, 0, 0, 0).
		io(0xcf8, 8).
		word(spaceIO, 3, 0x0000, 0x0cf7).
		word(spaceIO, 3, 0x0d00, 0xffff).
		dword(spaceMemory, 1, uint32(cfg.PCIMMIOBase), uint32(cfg.PCIMMIOBase+cfg.PCIMMIOSize-1))
	if cfg.PCIMMIO64Size != 0 {
		crs.qword(spaceMemory, 1, cfg.PCIMMIO64Base, cfg.PCIMMIO64Base+cfg.PCIMMIO64Size-1)
	}
	pci := (&aml{}).
		nameObj("_HID", (&aml{}).eisaID("PNP0A03").b).
		nameObj("_ADR", (&aml{}).integer(0).b).
		nameObj("_SEG", (&aml{}).integer(0).b).
		nameObj("_UID", (&aml{}).integer(0).b).
		nameObj("_BBN", (&aml{}).integer(0).b).
		nameObj("_CRS", (&aml{}).buffer(crs.end()).b)
	sb := (&aml{}).device("PCI0", pci)
	if cfg.Serial {
		com := (&aml{}).
			nameObj("_HID", (&aml{}).eisaID("PNP0501").b).
			nameObj("_UID", (&aml{}).integer(1).b).
			nameObj("_CRS", (&aml{}).buffer((&resources{}).io(0x3f8, 8).irq(4).end()).b)
		sb.device("COM1", com)
	}
	body := (&aml{}).
		scope(`\_SB`, sb).
		nameObj(`\_S5`, (&aml{}).packageOf(SleepTypeS5, SleepTypeS5, 0, 0).b)
	if body.err != nil {
		return nil, fmt.Errorf("encoding the DSDT: %w", body.err)
	}
	d := header("DSDT", 2, 0)
	d = append(d, body.b...)
	finish(d)
	return d, nil
}
