package acpi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testConfig matches what colibri's vmm package passes.
var testConfig = Config{
	CPUs:             2,
	IOAPICAddr:       0xfec00000,
	PCIMMIOBase:      0xc0000000,
	PCIMMIOSize:      0x10000000,
	PCIMMIO64Base:    1 << 34,
	PCIMMIO64Size:    64 << 30,
	SleepControlPort: 0x600,
	SleepStatusPort:  0x601,
	ResetPort:        0x602,
	ResetValue:       0x0f,
	Serial:           true,
	PowerButtonGSI:   23,
}

const testBase = 0xe0000

var le = binary.LittleEndian

// parsed is a Build image taken apart the way a guest walks it.
type parsed struct {
	rsdp []byte
	// tables by signature, the DSDT reached through the FADT.
	tables map[string][]byte
	// xsdt lists the signatures the XSDT points at, in order.
	xsdt []string
}

// parse walks img from the RSDP and checks what every table must satisfy:
// signature, length field, checksum, placement inside the image.
func parse(t *testing.T, img []byte, base, rsdpAddr uint64) parsed {
	t.Helper()
	table := func(addr uint64) []byte {
		t.Helper()
		if addr < base || addr-base+headerLen > uint64(len(img)) {
			t.Fatalf("table address %#x outside the image [%#x, +%#x)", addr, base, len(img))
		}
		off := addr - base
		n := uint64(le.Uint32(img[off+4:]))
		if n < headerLen || off+n > uint64(len(img)) {
			t.Fatalf("table at %#x: length %d runs outside the image", addr, n)
		}
		tb := img[off : off+n]
		if checksum(tb) != 0 {
			t.Errorf("%s: bytes do not sum to 0", tb[:4])
		}
		if addr%16 != 0 {
			t.Errorf("%s at %#x: not 16-byte aligned", tb[:4], addr)
		}
		return tb
	}
	if rsdpAddr%16 != 0 || rsdpAddr < base || rsdpAddr-base+rsdpLen > uint64(len(img)) {
		t.Fatalf("RSDP at %#x: not 16-byte aligned inside the image", rsdpAddr)
	}
	r := img[rsdpAddr-base:][:rsdpLen]
	switch {
	case string(r[:8]) != "RSD PTR ":
		t.Fatalf("RSDP signature %q", r[:8])
	case checksum(r[:20]) != 0:
		t.Error("RSDP: first 20 bytes do not sum to 0")
	case checksum(r) != 0:
		t.Error("RSDP: 36 bytes do not sum to 0")
	case r[15] != 2 || le.Uint32(r[20:]) != rsdpLen:
		t.Errorf("RSDP revision %d length %d, want 2 and 36", r[15], le.Uint32(r[20:]))
	case le.Uint32(r[16:]) != 0:
		t.Errorf("RSDP RSDT address %#x, want 0", le.Uint32(r[16:]))
	}
	p := parsed{rsdp: r, tables: map[string][]byte{}}
	xsdt := table(le.Uint64(r[24:]))
	if string(xsdt[:4]) != "XSDT" || (len(xsdt)-headerLen)%8 != 0 {
		t.Fatalf("XSDT: signature %q length %d", xsdt[:4], len(xsdt))
	}
	p.tables["XSDT"] = xsdt
	for off := headerLen; off < len(xsdt); off += 8 {
		tb := table(le.Uint64(xsdt[off:]))
		p.tables[string(tb[:4])] = tb
		p.xsdt = append(p.xsdt, string(tb[:4]))
	}
	if f := p.tables["FACP"]; f != nil {
		p.tables["DSDT"] = table(le.Uint64(f[fadtXDSDT:]))
	}
	return p
}

// madtEntry is one interrupt controller structure of the MADT.
type madtEntry struct {
	typ  byte
	body []byte // the bytes after type and length
}

func madtEntries(t *testing.T, m []byte) []madtEntry {
	t.Helper()
	var es []madtEntry
	for off := headerLen + 8; off < len(m); {
		if off+2 > len(m) || m[off+1] < 2 || off+int(m[off+1]) > len(m) {
			t.Fatalf("MADT entry at %d overruns the table", off)
		}
		es = append(es, madtEntry{m[off], m[off+2 : off+int(m[off+1])]})
		off += int(m[off+1])
	}
	return es
}

func TestBuild(t *testing.T) {
	one := testConfig
	one.CPUs, one.Serial, one.PCIMMIO64Size, one.IOAPICAddr, one.IOAPICID, one.PowerButtonGSI = 1, false, 0, 0, 3, 0
	many := testConfig
	many.CPUs, many.I8042 = 255, true
	cases := []struct {
		name string
		cfg  Config
		base uint64
	}{
		{"colibri default", testConfig, testBase},
		{"1 CPU, defaults, no serial, no 64-bit window, no power button", one, testBase},
		{"255 CPUs with i8042", many, testBase},
		{"high base", testConfig, 0x1_0000_0000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, rsdp, err := Build(c.cfg, c.base)
			if err != nil {
				t.Fatal(err)
			}
			if len(img) > MaxSize {
				t.Errorf("image of %d bytes", len(img))
			}
			if rsdp != c.base {
				t.Errorf("RSDP at %#x, want the base %#x", rsdp, c.base)
			}
			p := parse(t, img, c.base, rsdp)
			if got := strings.Join(p.xsdt, ","); got != "FACP,APIC" {
				t.Errorf("XSDT points at %s, want FACP,APIC", got)
			}
			checkFADT(t, c.cfg, c.base, p.tables["FACP"], p.tables["DSDT"], img)
			checkMADT(t, c.cfg, p.tables["APIC"])
			checkDSDT(t, c.cfg, p.tables["DSDT"])
		})
	}
}

func checkFADT(t *testing.T, cfg Config, base uint64, f, dsdt, img []byte) {
	t.Helper()
	if len(f) != fadtLen || f[8] != 6 || f[fadtMinorVer] != 5 {
		t.Errorf("FADT length %d revision %d.%d, want 276 and 6.5", len(f), f[8], f[fadtMinorVer])
	}
	flags := le.Uint32(f[fadtFlags:])
	for _, fl := range []struct {
		name string
		bit  uint32
	}{{"HW_REDUCED_ACPI", fadtHWReduced}, {"RESET_REG_SUP", fadtResetRegSup}, {"PWR_BUTTON", fadtNoPowerButton}, {"SLP_BUTTON", fadtNoSleepButton}} {
		if flags&fl.bit == 0 {
			t.Errorf("FADT flags %#x lack %s", flags, fl.name)
		}
	}
	boot := le.Uint16(f[fadtBootArch:])
	want8042 := uint16(0)
	if cfg.I8042 {
		want8042 = boot8042
	}
	if boot&(bootVGANotPresent|bootNoCMOSRTC|bootNoASPM) != bootVGANotPresent|bootNoCMOSRTC|bootNoASPM ||
		boot&(bootMSINotSupp|bootLegacyDevices) != 0 || boot&boot8042 != want8042 {
		t.Errorf("IAPC_BOOT_ARCH %#x: want VGA not present, CMOS RTC not present, no ASPM, MSI allowed, 8042 %v", boot, cfg.I8042)
	}
	for _, r := range []struct {
		name string
		off  int
		port uint16
	}{{"RESET_REG", fadtResetReg, cfg.ResetPort}, {"SLEEP_CONTROL_REG", fadtSleepCtl, cfg.SleepControlPort}, {"SLEEP_STATUS_REG", fadtSleepStatus, cfg.SleepStatusPort}} {
		g := f[r.off : r.off+12]
		want := append([]byte{1, 8, 0, 1}, le.AppendUint64(nil, uint64(r.port))...)
		if !bytes.Equal(g, want) {
			t.Errorf("%s GAS % x, want % x (system I/O, 8 bits, byte access, port %#x)", r.name, g, want, r.port)
		}
	}
	if f[fadtResetValue] != cfg.ResetValue {
		t.Errorf("RESET_VALUE %#x, want %#x", f[fadtResetValue], cfg.ResetValue)
	}
	xdsdt := le.Uint64(f[fadtXDSDT:])
	if want := uint64(le.Uint32(f[fadtDSDT:])); xdsdt >= 1<<32 && want != 0 || xdsdt < 1<<32 && want != xdsdt {
		t.Errorf("DSDT %#x and X_DSDT %#x disagree", want, xdsdt)
	}
	if !bytes.Equal(img[xdsdt-base:][:len(dsdt)], dsdt) || string(dsdt[:4]) != "DSDT" {
		t.Errorf("X_DSDT %#x does not point at the DSDT", xdsdt)
	}
	if got := string(f[fadtHypervisor : fadtHypervisor+8]); got != "COLIBRI\x00" {
		t.Errorf("hypervisor vendor %q", got)
	}
	// No SCI, PM timer, PM1 or GPE blocks; no FACS.
	for _, off := range []int{36, 46, 56, 64, 76, 88, 92, 132, 148, 208} {
		if v := le.Uint32(f[off:]); v != 0 {
			t.Errorf("FADT field at offset %d is %#x, want 0 on a hardware-reduced machine", off, v)
		}
	}
}

func checkMADT(t *testing.T, cfg Config, m []byte) {
	t.Helper()
	if le.Uint32(m[36:]) != LocalAPICAddr || le.Uint32(m[40:]) != madtPCATCompat {
		t.Errorf("MADT local APIC address %#x flags %#x", le.Uint32(m[36:]), le.Uint32(m[40:]))
	}
	var ids []byte
	var ioapics, overrides, nmis int
	wantIOAPIC := cfg.IOAPICAddr
	if wantIOAPIC == 0 {
		wantIOAPIC = DefaultIOAPICAddr
	}
	for _, e := range madtEntries(t, m) {
		switch e.typ {
		case madtLocalAPIC:
			if len(e.body) != 6 || e.body[0] != e.body[1] || le.Uint32(e.body[2:]) != madtLAPICEnabled {
				t.Errorf("local APIC entry % x: want UID = APIC id, enabled", e.body)
			}
			ids = append(ids, e.body[1])
		case madtIOAPIC:
			ioapics++
			if len(e.body) != 10 || e.body[0] != cfg.IOAPICID || uint64(le.Uint32(e.body[2:])) != wantIOAPIC || le.Uint32(e.body[6:]) != 0 {
				t.Errorf("IOAPIC entry % x: want id %d at %#x, GSI base 0", e.body, cfg.IOAPICID, wantIOAPIC)
			}
		case madtIntOverride:
			overrides++
			if !bytes.Equal(e.body, []byte{0, 0, 2, 0, 0, 0, 0, 0}) {
				t.Errorf("override % x: want ISA IRQ 0 → GSI 2, conforming", e.body)
			}
		case madtLocalAPICNMI:
			nmis++
			if !bytes.Equal(e.body, []byte{0xff, 0, 0, 1}) {
				t.Errorf("local APIC NMI % x: want all processors, LINT1", e.body)
			}
		default:
			t.Errorf("unexpected MADT entry type %d", e.typ)
		}
	}
	if len(ids) != cfg.CPUs {
		t.Fatalf("MADT has %d local APICs, want %d", len(ids), cfg.CPUs)
	}
	for i, id := range ids {
		if int(id) != i {
			t.Errorf("local APIC %d has id %d", i, id)
		}
	}
	if ioapics != 1 || overrides != 1 || nmis != 1 {
		t.Errorf("MADT has %d IOAPICs, %d overrides, %d NMI entries; want 1 each", ioapics, overrides, nmis)
	}
}

func checkDSDT(t *testing.T, cfg Config, d []byte) {
	t.Helper()
	if d[8] != dsdtRev {
		t.Errorf("DSDT revision %d", d[8])
	}
	aml := d[headerLen:]
	s5 := []byte{0x08, '\\', '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, SleepTypeS5, 0x0a, SleepTypeS5, 0, 0}
	if !bytes.Contains(aml, s5) {
		t.Error("DSDT lacks Name (\\_S5, Package (4) {5, 5, 0, 0})")
	}
	com := []byte{0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00}
	if got := bytes.Contains(aml, com); got != cfg.Serial {
		t.Errorf("DSDT has COM1 resources: %v, want %v", got, cfg.Serial)
	}
	if got := bytes.Contains(aml, []byte{0x8a, 0x2b, 0x00}); got != (cfg.PCIMMIO64Size != 0) {
		t.Errorf("DSDT has a QWord window: %v, want %v", got, cfg.PCIMMIO64Size != 0)
	}
	win := (&resources{}).dword(spaceMemory, memReadWrite, uint32(cfg.PCIMMIOBase), uint32(cfg.PCIMMIOBase+cfg.PCIMMIOSize-1)).b
	if !bytes.Contains(aml, win) {
		t.Error("DSDT lacks the 32-bit PCI window")
	}
	checkPowerButton(t, cfg, aml)
	// The whole AML is one \_S5 Name and one \_SB Scope: the top-level
	// PkgLength covers exactly the rest of the table.
	rest := aml[len(s5):]
	if rest[0] != opScope {
		t.Fatalf("after \\_S5: opcode %#x, want Scope", rest[0])
	}
	n, _, err := decodePkgLength(rest[1:])
	if err != nil || n != len(rest)-1 {
		t.Errorf("\\_SB scope PkgLength %d (%v), want %d", n, err, len(rest)-1)
	}
}

// checkPowerButton finds \_SB.PWRB and \_SB.GED0 in the AML when
// cfg.PowerButtonGSI asks for them, and neither otherwise.
func checkPowerButton(t *testing.T, cfg Config, aml []byte) {
	t.Helper()
	gsi := byte(cfg.PowerButtonGSI)
	parts := []struct {
		what  string
		bytes []byte
	}{
		{"Device (PWRB) with _HID PNP0C0C", []byte{0x5b, 0x82, 0x15, 'P', 'W', 'R', 'B', 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0c, 0x0c}},
		{"Device (GED0) of 71 bytes", []byte{0x5b, 0x82, 0x49, 0x04, 'G', 'E', 'D', '0'}},
		{`Name (_HID, "ACPI0013")`, []byte{0x08, '_', 'H', 'I', 'D', 0x0d, 'A', 'C', 'P', 'I', '0', '0', '1', '3', 0}},
		{"_CRS with Interrupt (edge, active high) {GSI}", []byte{0x08, '_', 'C', 'R', 'S', 0x11, 0x0e, 0x0a, 0x0b, 0x89, 0x06, 0x00, 0x03, 0x01, gsi, 0, 0, 0, 0x79, 0x00}},
		{"Method (_EVT, 1) { If (LEqual (Arg0, GSI)) { Notify (\\_SB.PWRB, 0x80) } }", []byte{0x14, 0x19, '_', 'E', 'V', 'T', 0x01,
			0xa0, 0x12, 0x93, 0x68, 0x0a, gsi, 0x86, '\\', 0x2e, '_', 'S', 'B', '_', 'P', 'W', 'R', 'B', 0x0a, 0x80}},
	}
	want := cfg.PowerButtonGSI != 0
	for _, p := range parts {
		if got := bytes.Contains(aml, p.bytes); got != want {
			t.Errorf("DSDT has %s: %v, want %v", p.what, got, want)
		}
	}
	for _, name := range []string{"PWRB", "GED0", "_EVT"} {
		if got := bytes.Contains(aml, []byte(name)); got != want {
			t.Errorf("DSDT names %s: %v, want %v", name, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		mut  func(*Config)
		want string // error substring; "" = valid
	}{
		{"as given", func(*Config) {}, ""},
		{"255 CPUs", func(c *Config) { c.CPUs = 255 }, ""},
		{"window up to 4 GiB", func(c *Config) { c.PCIMMIOBase, c.PCIMMIOSize = 0xf0000000, 0x10000000 }, ""},
		{"no 64-bit window", func(c *Config) { c.PCIMMIO64Base, c.PCIMMIO64Size = 0, 0 }, ""},
		{"64-bit window to the top", func(c *Config) { c.PCIMMIO64Base, c.PCIMMIO64Size = 1<<63, 1<<63 }, ""},
		{"0 CPUs", func(c *Config) { c.CPUs = 0 }, "CPUs is 0"},
		{"256 CPUs", func(c *Config) { c.CPUs = 256 }, "CPUs is 256"},
		{"IOAPIC above 4 GiB", func(c *Config) { c.IOAPICAddr = 1 << 32 }, "IOAPICAddr"},
		{"no sleep-control port", func(c *Config) { c.SleepControlPort = 0 }, "SleepControlPort"},
		{"no sleep-status port", func(c *Config) { c.SleepStatusPort = 0 }, "SleepStatusPort"},
		{"no reset port", func(c *Config) { c.ResetPort = 0 }, "ResetPort"},
		{"sleep control on the RTC", func(c *Config) { c.SleepControlPort = 0x70 }, "legacy ISA range"},
		{"sleep status on the ELCR", func(c *Config) { c.SleepStatusPort = 0x4d1 }, "edge/level"},
		{"sleep control on PCI config", func(c *Config) { c.SleepControlPort = 0xcf9 }, "PCI configuration"},
		{"reset at 0xcf9 is fine", func(c *Config) { c.ResetPort = 0xcf9 }, ""},
		{"sleep ports at 0x100", func(c *Config) { c.SleepControlPort, c.SleepStatusPort = 0x100, 0x100 }, ""},
		{"empty window", func(c *Config) { c.PCIMMIOSize = 0 }, "PCIMMIOSize is 0"},
		{"window past 4 GiB", func(c *Config) { c.PCIMMIOBase = 0xfff00000 }, "below 4 GiB"},
		{"window above 4 GiB", func(c *Config) { c.PCIMMIOBase = 1 << 32 }, "below 4 GiB"},
		{"window wrapping", func(c *Config) { c.PCIMMIOBase, c.PCIMMIOSize = 1<<64-0x1000, 0x2000 }, "below 4 GiB"},
		{"64-bit window low", func(c *Config) { c.PCIMMIO64Base = 0x1000 }, "64-bit PCI window base"},
		{"64-bit window wrapping", func(c *Config) { c.PCIMMIO64Base, c.PCIMMIO64Size = 1<<63, 1<<63+1 }, "wraps"},
		{"no power button", func(c *Config) { c.PowerButtonGSI = 0 }, ""},
		{"power button on GSI 5", func(c *Config) { c.PowerButtonGSI = 5 }, ""},
		{"power button on GSI 4 without serial", func(c *Config) { c.PowerButtonGSI, c.Serial = 4, false }, ""},
		{"power button on COM1's IRQ", func(c *Config) { c.PowerButtonGSI = 4 }, "COM1"},
		{"power button on the PIT's GSI", func(c *Config) { c.PowerButtonGSI = 2 }, "PIT"},
		{"power button past the IOAPIC", func(c *Config) { c.PowerButtonGSI = 24 }, "not an IOAPIC input"},
	}
	for _, c := range cases {
		cfg := testConfig
		c.mut(&cfg)
		err := cfg.Validate()
		_, _, buildErr := Build(cfg, testBase)
		switch {
		case c.want == "" && (err != nil || buildErr != nil):
			t.Errorf("%s: Validate: %v; Build: %v", c.name, err, buildErr)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: Validate: %v, want an error about %q", c.name, err, c.want)
		case c.want != "" && buildErr == nil:
			t.Errorf("%s: Build accepted the config", c.name)
		}
	}
	if _, _, err := Build(testConfig, testBase+8); err == nil || !strings.Contains(err.Error(), "aligned") {
		t.Errorf("Build at an unaligned base: %v, want an alignment error", err)
	}
}

func TestSleepControl(t *testing.T) {
	cases := []struct {
		v      uint8
		slpTyp uint8
		enable bool
	}{
		{0x34, SleepTypeS5, true}, // what Linux writes to power off
		{0x14, SleepTypeS5, false},
		{0x20, 0, true},
		{0xff, 7, true},
		{0xc3, 0, false}, // bits outside SLP_TYP and SLP_EN are ignored
	}
	for _, c := range cases {
		if typ, en := DecodeSleepControl(c.v); typ != c.slpTyp || en != c.enable {
			t.Errorf("DecodeSleepControl(%#x) = %d, %v; want %d, %v", c.v, typ, en, c.slpTyp, c.enable)
		}
	}
	if v := SleepControlValue(SleepTypeS5); v != 0x34 {
		t.Errorf("SleepControlValue(S5) = %#x, want 0x34", v)
	}
	for typ := uint8(0); typ < 8; typ++ {
		if got, en := DecodeSleepControl(SleepControlValue(typ)); got != typ || !en {
			t.Errorf("SLP_TYP %d round trips to %d, %v", typ, got, en)
		}
	}
}

// iasl returns the path of ACPICA's compiler/disassembler or fails the test.
func iasl(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("iasl")
	if err != nil {
		t.Fatal("iasl not found: run 'make deps' (it installs Debian's acpica-tools)")
	}
	return p
}

// TestDisassemble runs every table through ACPICA's disassembler (the
// same table and AML parsers the guest kernel uses) and checks the text.
func TestDisassemble(t *testing.T) {
	bin := iasl(t)
	img, rsdp, err := Build(testConfig, testBase)
	if err != nil {
		t.Fatal(err)
	}
	p := parse(t, img, testBase, rsdp)
	want := map[string][]string{
		"DSDT": {
			`Name (\_S5, Package (0x04)`, "0x05,", `Scope (\_SB)`, "Device (PCI0)",
			`Name (_HID, EisaId ("PNP0A08")`, `Name (_CID, EisaId ("PNP0A03")`,
			"Name (_SEG, Zero)", "Name (_UID, Zero)", "Name (_BBN, Zero)",
			"WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,",
			"IO (Decode16,\n                    0x0CF8,             // Range Minimum\n                    0x0CF8,",
			"0x0CF7,             // Range Maximum", "0x0D00,             // Range Minimum",
			"0xFFFF,             // Range Maximum",
			"DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,",
			"0xC0000000,         // Range Minimum", "0xCFFFFFFF,         // Range Maximum",
			"QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,",
			"0x0000000400000000, // Range Minimum", "0x00000013FFFFFFFF, // Range Maximum",
			"Device (COM1)", `Name (_HID, EisaId ("PNP0501")`, "Name (_UID, One)",
			"0x03F8,             // Range Minimum", "IRQNoFlags ()\n                    {4}",
			"Device (PWRB)", `Name (_HID, EisaId ("PNP0C0C") /* Power Button Device */)`,
			"Device (GED0)", `Name (_HID, "ACPI0013" /* Generic Event Device */)`,
			"Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000017,\n                }",
			"Method (_EVT, 1, NotSerialized)", "If ((Arg0 == 0x17))", `Notify (\_SB.PWRB, 0x80) // Status Change`,
		},
		"FACP": {
			"Hardware Reduced (V5) : 1", "Reset Register Supported (V2) : 1",
			"VGA Not Present (V4) : 1", "CMOS RTC Not Present (V5) : 1", "PCIe ASPM Not Supported (V4) : 1",
			"MSI Not Supported (V4) : 0", "8042 Present on ports 60/64 (V2) : 0",
			"Address : 0000000000000600", "Address : 0000000000000601", "Address : 0000000000000602",
			"Value to cause reset : 0F", "FADT Minor Revision : 05",
		},
		"APIC": {"Local Apic Address : FEE00000", "PC-AT Compatibility : 1", "Processor Local APIC",
			"Local Apic ID : 01", "Address : FEC00000", "Interrupt Source Override",
			"Interrupt : 00000002", "Local APIC NMI"},
		"XSDT": {"ACPI Table Address   0 : 00000000000E", "ACPI Table Address   1 : 00000000000E"},
	}
	dir := t.TempDir()
	for sig, words := range want {
		out, dsl := disassemble(t, bin, dir, sig, p.tables[sig])
		for _, w := range words {
			if !strings.Contains(dsl, w) {
				t.Errorf("%s disassembly lacks %q:\n%s", sig, w, dsl)
			}
		}
		for _, bad := range []string{"Error", "Warning", "Invalid", "Unknown"} {
			if strings.Contains(out, bad) || strings.Contains(dsl, bad) {
				t.Errorf("iasl -d %s reports %q:\n%s\n%s", sig, bad, out, dsl)
			}
		}
	}
}

// disassemble writes table to dir and returns iasl -d's output and the .dsl.
func disassemble(t *testing.T, bin, dir, sig string, table []byte) (out, dsl string) {
	t.Helper()
	if table == nil {
		t.Fatalf("no %s table", sig)
	}
	path := filepath.Join(dir, strings.ToLower(sig)+".dat")
	if err := os.WriteFile(path, table, 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := exec.Command(bin, "-d", path).CombinedOutput()
	if err != nil {
		t.Fatalf("iasl -d %s: %v\n%s", sig, err, o)
	}
	d, err := os.ReadFile(strings.TrimSuffix(path, ".dat") + ".dsl")
	if err != nil {
		t.Fatalf("iasl -d %s wrote no .dsl: %v\n%s", sig, err, o)
	}
	return string(o), string(d)
}

// TestRecompileDSDT compiles iasl's disassembly of the DSDT back to AML:
// ACPICA's own encoder must produce the same bytes as ours.
func TestRecompileDSDT(t *testing.T) {
	bin := iasl(t)
	for _, c := range []struct {
		serial bool
		button uint32
	}{{true, 23}, {false, 0}, {false, 4}} {
		t.Run(fmt.Sprintf("serial=%v,button=%d", c.serial, c.button), func(t *testing.T) {
			cfg := testConfig
			cfg.Serial, cfg.PowerButtonGSI = c.serial, c.button
			img, rsdp, err := Build(cfg, testBase)
			if err != nil {
				t.Fatal(err)
			}
			dsdt := parse(t, img, testBase, rsdp).tables["DSDT"]
			dir := t.TempDir()
			disassemble(t, bin, dir, "DSDT", dsdt)
			// -oa: no optimisation, so names stay as written.
			out, err := exec.Command(bin, "-oa", "-p", filepath.Join(dir, "re"), filepath.Join(dir, "dsdt.dsl")).CombinedOutput()
			if err != nil {
				t.Fatalf("iasl compiling the disassembled DSDT: %v\n%s", err, out)
			}
			re, err := os.ReadFile(filepath.Join(dir, "re.aml"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(out), "0 Errors, 0 Warnings") {
				t.Errorf("iasl warns about the disassembled DSDT:\n%s", out)
			}
			if !bytes.Equal(re[headerLen:], dsdt[headerLen:]) {
				t.Errorf("iasl recompiles the DSDT body to\n% x\nours is\n% x", re[headerLen:], dsdt[headerLen:])
			}
		})
	}
}
