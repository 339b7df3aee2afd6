package acpi

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var testConfig = Config{
	CPUs: 2, IOAPICAddr: 0xfec00000,
	PCIMMIOBase: 0xc0000000, PCIMMIOSize: 0x10000000,
	PCIMMIO64Base: 1 << 34, PCIMMIO64Size: 64 << 30,
	SleepControlPort: 0x600, SleepStatusPort: 0x601, ResetPort: 0x602, ResetValue: 0x0f,
	Serial: true,
}

const base = 0xe0000

// tables splits a Build image into its tables by signature.
func tables(t *testing.T, img []byte, rsdp uint64) map[string][]byte {
	t.Helper()
	at := func(addr uint64) []byte {
		off := addr - base
		n := binary.LittleEndian.Uint32(img[off+4:])
		return img[off : off+uint64(n)]
	}
	r := img[rsdp-base : rsdp-base+36]
	if string(r[:8]) != "RSD PTR " || checksum(r[:20]) != 0 || checksum(r) != 0 || r[15] != 2 {
		t.Fatalf("bad RSDP % x", r)
	}
	out := map[string][]byte{}
	xsdt := at(binary.LittleEndian.Uint64(r[24:]))
	out["XSDT"] = xsdt
	for off := headerLen; off < len(xsdt); off += 8 {
		tb := at(binary.LittleEndian.Uint64(xsdt[off:]))
		out[string(tb[:4])] = tb
	}
	out["DSDT"] = at(binary.LittleEndian.Uint64(out["FACP"][140:]))
	for sig, tb := range out {
		if checksum(tb) != 0 {
			t.Errorf("%s checksum does not sum to zero", sig)
		}
	}
	return out
}

func TestBuild(t *testing.T) {
	img, rsdp, err := Build(testConfig, base)
	if err != nil {
		t.Fatal(err)
	}
	if rsdp%16 != 0 || len(img) > MaxSize {
		t.Errorf("rsdp at %#x, image %d bytes", rsdp, len(img))
	}
	ts := tables(t, img, rsdp)
	for _, sig := range []string{"XSDT", "FACP", "APIC", "DSDT"} {
		if ts[sig] == nil {
			t.Fatalf("no %s", sig)
		}
	}
	f := ts["FACP"]
	if flags := binary.LittleEndian.Uint32(f[112:]); flags&fadtHWReduced == 0 || flags&fadtResetRegSup == 0 {
		t.Errorf("FADT flags %#x", flags)
	}
	if port := binary.LittleEndian.Uint64(f[244+4:]); port != 0x600 || f[244] != 1 {
		t.Errorf("sleep control register %v", f[244:256])
	}
	if port := binary.LittleEndian.Uint64(f[116+4:]); port != 0x602 || f[128] != 0x0f {
		t.Errorf("reset register %v value %#x", f[116:128], f[128])
	}
	if len(f) != 276 {
		t.Errorf("FADT is %d bytes", len(f))
	}
	m := ts["APIC"]
	var ids []byte
	for off := 44; off < len(m); off += int(m[off+1]) {
		if m[off] == madtLocalAPIC {
			ids = append(ids, m[off+3])
			if m[off+4]&1 == 0 {
				t.Errorf("CPU %d not enabled", m[off+3])
			}
		}
	}
	if !bytes.Equal(ids, []byte{0, 1}) {
		t.Errorf("MADT APIC ids %v", ids)
	}
}

func TestSleepControl(t *testing.T) {
	// What Linux writes for S5 in hardware-reduced mode.
	v := uint8(SleepTypeS5<<2 | 0x20)
	if typ, en := DecodeSleepControl(v); typ != SleepTypeS5 || !en {
		t.Errorf("decode %#x = %d %v", v, typ, en)
	}
	if _, en := DecodeSleepControl(SleepTypeS5 << 2); en {
		t.Error("SLP_EN decoded from a write without it")
	}
}

func TestValidate(t *testing.T) {
	bad := []func(*Config){
		func(c *Config) { c.CPUs = 0 },
		func(c *Config) { c.CPUs = 256 },
		func(c *Config) { c.ResetPort = 0 },
		func(c *Config) { c.PCIMMIOSize = 0 },
		func(c *Config) { c.PCIMMIOBase = 0xfff00000 },
		func(c *Config) { c.PCIMMIO64Base = 0x1000 },
	}
	for i, mut := range bad {
		c := testConfig
		mut(&c)
		if _, _, err := Build(c, base); err == nil {
			t.Errorf("case %d: bad config accepted", i)
		}
	}
}

func TestPkgLength(t *testing.T) {
	cases := map[int][]byte{
		0:       {0x01},
		62:      {0x3f},
		63:      {0x41, 0x04},             // 65 = 0x41: lead 0x40|1, then 0x04
		4093:    {0x4f, 0xff},             // 4095
		4094:    {0x81, 0x00, 0x01},       // 4097 = 0x1001 in three bytes
		1 << 20: {0xc4, 0x00, 0x00, 0x01}, // 0x100004 needs four bytes
	}
	for n, want := range cases {
		got, err := pkgLength(n)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("pkgLength(%d) = % x, %v; want % x", n, got, err, want)
		}
		if total := decodePkgLength(got); total != n+len(got) {
			t.Errorf("pkgLength(%d) decodes to %d, want %d", n, total, n+len(got))
		}
	}
}

// decodePkgLength is the reader side, to check the encoder.
func decodePkgLength(b []byte) int {
	extra := int(b[0] >> 6)
	if extra == 0 {
		return int(b[0] & 0x3f)
	}
	v := int(b[0] & 0x0f)
	for i := 0; i < extra; i++ {
		v |= int(b[1+i]) << (4 + 8*i)
	}
	return v
}

func FuzzPkgLength(f *testing.F) {
	for _, n := range []int{0, 62, 63, 4093, 4094, 1 << 20, 1<<28 - 5} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, n int) {
		if n < 0 || n > 1<<28 {
			return
		}
		b, err := pkgLength(n)
		if err != nil {
			if n < 1<<28-4 {
				t.Fatalf("pkgLength(%d): %v", n, err)
			}
			return
		}
		if got := decodePkgLength(b); got != n+len(b) {
			t.Fatalf("pkgLength(%d) round trip %d", n, got)
		}
	})
}

func TestNames(t *testing.T) {
	cases := map[string]string{
		"_HID":      "_HID",
		`\_SB`:      `\_SB_`,
		`\_SB.PCI0`: "\\\x2e_SB_PCI0",
		"A.B.C":     "\x2f\x03A___B___C___",
	}
	for in, want := range cases {
		got, err := nameString(in)
		if err != nil || string(got) != want {
			t.Errorf("nameString(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"TOOLONG", "a", "1ABC", "A.", "A-B"} {
		if _, err := nameString(bad); err == nil {
			t.Errorf("nameString(%q) accepted", bad)
		}
	}
	if v, _ := eisaID("PNP0A03"); v != 0x030ad041 {
		t.Errorf("EISA PNP0A03 = %#x", v)
	}
}

// TestDisassemble checks the tables with ACPICA's disassembler, the same
// parser family the guest kernel uses.
func TestDisassemble(t *testing.T) {
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Fatal("iasl not found: run 'make deps' (Debian package acpica-tools)")
	}
	img, rsdp, err := Build(testConfig, base)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	want := map[string][]string{
		"DSDT": {"PNP0A03", "_S5_", "PNP0501", "0x03F8", "WordBusNumber", "0xC0000000", "0xCFFFFFFF", "QWordMemory", "IRQNoFlags"},
		"FACP": {"Hardware Reduced (V5) : 1", "Address : 0000000000000600", "Address : 0000000000000602"},
		"APIC": {"Processor Local APIC", "I/O APIC", "Interrupt Source Override"},
	}
	for sig, tb := range tables(t, img, rsdp) {
		if want[sig] == nil {
			continue
		}
		path := filepath.Join(dir, strings.ToLower(sig)+".dat")
		os.WriteFile(path, tb, 0o644)
		out, err := exec.Command(iasl, "-d", path).CombinedOutput()
		if err != nil {
			t.Errorf("iasl -d %s: %v\n%s", sig, err, out)
			continue
		}
		dsl, err := os.ReadFile(strings.TrimSuffix(path, ".dat") + ".dsl")
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want[sig] {
			if !strings.Contains(string(dsl), w) {
				t.Errorf("%s disassembly lacks %q:\n%s", sig, w, dsl)
			}
		}
		if strings.Contains(string(out), "Error") {
			t.Errorf("iasl reported errors for %s:\n%s", sig, out)
		}
	}
}
