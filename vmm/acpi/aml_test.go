package acpi

import (
	"bytes"
	"strings"
	"testing"
)

func TestPkgLength(t *testing.T) {
	// n is the body length; the encoded value is n plus the PkgLength's
	// own bytes.
	cases := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x01}},
		{62, []byte{0x3f}},                                 // 63: the largest 1-byte value
		{63, []byte{0x41, 0x04}},                           // 64 does not fit one byte: 65 = 0x041
		{64, []byte{0x42, 0x04}},                           // 66
		{4093, []byte{0x4f, 0xff}},                         // 4095: the largest 2-byte value
		{4094, []byte{0x81, 0x00, 0x01}},                   // 4096 does not fit two: 4097 = 0x01001
		{4095, []byte{0x82, 0x00, 0x01}},                   // 4098
		{1<<20 - 4, []byte{0x8f, 0xff, 0xff}},              // 0xfffff: the largest 3-byte value
		{1<<20 - 3, []byte{0xc1, 0x00, 0x00, 0x01}},        // 0x100001
		{maxPkgLength - 4, []byte{0xcf, 0xff, 0xff, 0xff}}, // 0xfffffff: the largest
	}
	for _, c := range cases {
		got, err := pkgLength(c.n)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("pkgLength(%d) = % x, %v; want % x", c.n, got, err, c.want)
			continue
		}
		v, size, err := decodePkgLength(got)
		if err != nil || v != c.n+len(got) || size != len(got) {
			t.Errorf("decodePkgLength(% x) = %d, %d, %v; want %d, %d", got, v, size, err, c.n+len(got), len(got))
		}
	}
	for _, n := range []int{-1, maxPkgLength - 3, maxPkgLength} {
		if b, err := pkgLength(n); err == nil {
			t.Errorf("pkgLength(%d) = % x, want an error", n, b)
		}
	}
}

func TestDecodePkgLengthErrors(t *testing.T) {
	for _, b := range [][]byte{nil, {0x41}, {0xc0, 1, 2}, {0x71, 0}} {
		if v, _, err := decodePkgLength(b); err == nil {
			t.Errorf("decodePkgLength(% x) = %d, want an error", b, v)
		}
	}
}

// FuzzPkgLength checks the encoder against the decoder for any length; the
// TestPkgLength boundaries are its seeds.
func FuzzPkgLength(f *testing.F) {
	for _, n := range []int{0, 62, 63, 4093, 4094, 1<<20 - 4, 1<<20 - 3, maxPkgLength - 4, maxPkgLength - 3} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, n int) {
		b, err := pkgLength(n)
		if n < 0 || n > maxPkgLength-4 {
			if err == nil {
				t.Fatalf("pkgLength(%d) = % x, want an error", n, b)
			}
			return
		}
		if err != nil {
			t.Fatalf("pkgLength(%d): %v", n, err)
		}
		v, size, err := decodePkgLength(b)
		if err != nil || v != n+len(b) || size != len(b) {
			t.Fatalf("pkgLength(%d) = % x decodes to %d, %d, %v", n, b, v, size, err)
		}
		// The encoding is the shortest possible.
		if len(b) > 1 {
			if short := []int{0, 0x3f, 0xfff, 0xfffff}[len(b)-1]; n+len(b)-1 <= short {
				t.Fatalf("pkgLength(%d) took %d bytes, %d would do", n, len(b), len(b)-1)
			}
		}
	})
}

func TestNameString(t *testing.T) {
	cases := []struct{ in, want string }{
		{"_HID", "_HID"},
		{"S5", "S5__"},
		{`\_SB`, `\_SB_`},
		{`\_SB.PCI0`, "\\\x2e_SB_PCI0"},
		{"A.B.C", "\x2f\x03A___B___C___"},
		{`\_SB.PCI0.COM1`, "\\\x2f\x03_SB_PCI0COM1"},
		{"^^PCI0", "^^PCI0"},
		{`\`, "\\\x00"},
		{"^", "^\x00"},
	}
	for _, c := range cases {
		got, err := nameString(c.in)
		if err != nil || string(got) != c.want {
			t.Errorf("nameString(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "TOOLONG", "a", "1ABC", "A.", ".A", "A..B", "A-B", `\^A`, `A\B`, strings.Repeat("A.", 255) + "A"} {
		if got, err := nameString(bad); err == nil {
			t.Errorf("nameString(%q) = %q, want an error", bad, got)
		}
	}
}

func TestEISAID(t *testing.T) {
	cases := []struct {
		id   string
		want uint32
	}{
		{"PNP0A03", 0x030ad041},
		{"PNP0A08", 0x080ad041},
		{"PNP0501", 0x0105d041},
		{"PNP0303", 0x0303d041},
		{"ABC1234", 0x34124304}, // A=1,B=2,C=3: 00001 00010 00011 = 0x0443
	}
	for _, c := range cases {
		if got, err := eisaID(c.id); err != nil || got != c.want {
			t.Errorf("eisaID(%q) = %#x, %v; want %#x", c.id, got, err, c.want)
		}
	}
	for _, bad := range []string{"PNP0A0", "PNP0A030", "pnp0A03", "PNP0A0G", "P@P0A03"} {
		if _, err := eisaID(bad); err == nil {
			t.Errorf("eisaID(%q) accepted", bad)
		}
	}
}

func TestAMLEncoding(t *testing.T) {
	cases := []struct {
		name string
		a    *aml
		want []byte
	}{
		{"Zero", (&aml{}).integer(0), []byte{0x00}},
		{"One", (&aml{}).integer(1), []byte{0x01}},
		{"Byte 2", (&aml{}).integer(2), []byte{0x0a, 0x02}},
		{"Byte 0xff", (&aml{}).integer(0xff), []byte{0x0a, 0xff}},
		{"Word 0x100", (&aml{}).integer(0x100), []byte{0x0b, 0x00, 0x01}},
		{"Word 0xffff", (&aml{}).integer(0xffff), []byte{0x0b, 0xff, 0xff}},
		{"DWord 0x10000", (&aml{}).integer(0x10000), []byte{0x0c, 0x00, 0x00, 0x01, 0x00}},
		{"DWord 0xffffffff", (&aml{}).integer(0xffffffff), []byte{0x0c, 0xff, 0xff, 0xff, 0xff}},
		{"QWord 1<<32", (&aml{}).integer(1 << 32), []byte{0x0e, 0, 0, 0, 0, 1, 0, 0, 0}},
		{"QWord", (&aml{}).integer(0x0123456789abcdef), []byte{0x0e, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01}},
		{"Ones", (&aml{}).integer(^uint64(0)), []byte{0xff}},
		{"String", (&aml{}).str("ab"), []byte{0x0d, 'a', 'b', 0}},
		{"empty String", (&aml{}).str(""), []byte{0x0d, 0}},
		{"EisaId", (&aml{}).eisaID("PNP0A08"), []byte{0x0c, 0x41, 0xd0, 0x0a, 0x08}},
		{"Name", (&aml{}).nameObj("_UID", (&aml{}).integer(1)), []byte{0x08, '_', 'U', 'I', 'D', 0x01}},
		{"Package", (&aml{}).packageOf(5, 5, 0, 0),
			[]byte{0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00}},
		{"empty Package", (&aml{}).packageOf(), []byte{0x12, 0x02, 0x00}},
		{"Buffer", (&aml{}).buffer([]byte{0x79, 0x00}), []byte{0x11, 0x05, 0x0a, 0x02, 0x79, 0x00}},
		{"empty Buffer", (&aml{}).buffer(nil), []byte{0x11, 0x02, 0x00}},
		{"Scope", (&aml{}).scope(`\_SB`, &aml{}), []byte{0x10, 0x06, '\\', '_', 'S', 'B', '_'}},
		{"Device", (&aml{}).device("COM1", (&aml{}).nameObj("_UID", (&aml{}).integer(1))),
			[]byte{0x5b, 0x82, 0x0b, 'C', 'O', 'M', '1', 0x08, '_', 'U', 'I', 'D', 0x01}},
		{"Method", (&aml{}).method("_STA", 0, false, (&aml{}).ret((&aml{}).integer(0x0f))),
			[]byte{0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f}},
		{"serialized Method", (&aml{}).method("FOO", 2, true, &aml{}),
			[]byte{0x14, 0x06, 'F', 'O', 'O', '_', 0x0a}},
		{"Arg0", (&aml{}).arg(0), []byte{0x68}},
		{"Arg6", (&aml{}).arg(6), []byte{0x6e}},
		{"LEqual", (&aml{}).lequal((&aml{}).arg(0), (&aml{}).integer(0x17)), []byte{0x93, 0x68, 0x0a, 0x17}},
		{"Notify", (&aml{}).notify(`\_SB.PWRB`, 0x80),
			[]byte{0x86, '\\', 0x2e, '_', 'S', 'B', '_', 'P', 'W', 'R', 'B', 0x0a, 0x80}},
		{"If", (&aml{}).ifThen((&aml{}).lequal((&aml{}).arg(1), (&aml{}).integer(1)), (&aml{}).ret((&aml{}).integer(0))),
			[]byte{0xa0, 0x06, 0x93, 0x69, 0x01, 0xa4, 0x00}},
		{"empty If", (&aml{}).ifThen((&aml{}).integer(0), &aml{}), []byte{0xa0, 0x02, 0x00}},
		// What Build emits for a power button on GSI 23.
		{"_EVT", (&aml{}).method("_EVT", 1, false, (&aml{}).ifThen(
			(&aml{}).lequal((&aml{}).arg(0), (&aml{}).integer(23)),
			(&aml{}).notify(`\_SB.PWRB`, 0x80))),
			[]byte{0x14, 0x19, '_', 'E', 'V', 'T', 0x01,
				0xa0, 0x12, 0x93, 0x68, 0x0a, 0x17,
				0x86, '\\', 0x2e, '_', 'S', 'B', '_', 'P', 'W', 'R', 'B', 0x0a, 0x80}},
		{"nested", (&aml{}).scope(`\_SB`, (&aml{}).device("PCI0", &aml{})),
			[]byte{0x10, 0x0d, '\\', '_', 'S', 'B', '_', 0x5b, 0x82, 0x05, 'P', 'C', 'I', '0'}},
	}
	for _, c := range cases {
		got, err := c.a.result()
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("%s: % x, %v; want % x", c.name, got, err, c.want)
		}
	}
}

// TestAMLLongBody crosses the 1-byte PkgLength boundary inside a Buffer.
func TestAMLLongBody(t *testing.T) {
	data := bytes.Repeat([]byte{0xaa}, 61) // body: 0x0a 0x3d + 61 bytes = 63
	got, err := (&aml{}).buffer(data).result()
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0x11, 0x41, 0x04, 0x0a, 0x3d}, data...)
	if !bytes.Equal(got, want) {
		t.Errorf("Buffer of 61 bytes: % x; want % x", got, want)
	}
}

func TestAMLErrorsStick(t *testing.T) {
	cases := []struct {
		name string
		a    *aml
	}{
		{"bad name", (&aml{}).nameObj("bad", (&aml{}).integer(1))},
		{"bad nested name", (&aml{}).scope(`\_SB`, (&aml{}).device("PCI0", (&aml{}).nameObj("TOOLONG", &aml{})))},
		{"bad device", (&aml{}).device("x", &aml{})},
		{"bad EISA id in object", (&aml{}).nameObj("_HID", (&aml{}).eisaID("XYZ"))},
		{"non-ASCII string", (&aml{}).str("é")},
		{"NUL in string", (&aml{}).str("a\x00b")},
		{"8 arguments", (&aml{}).method("FOO", 8, false, &aml{})},
		{"bad returned object", (&aml{}).ret((&aml{}).str("\xff"))},
		{"256 package elements", (&aml{}).packageOf(make([]uint64, 256)...)},
		{"Arg7", (&aml{}).arg(7)},
		{"Arg-1", (&aml{}).arg(-1)},
		{"bad LEqual operand", (&aml{}).lequal((&aml{}).arg(9), (&aml{}).integer(1))},
		{"bad If predicate", (&aml{}).ifThen((&aml{}).arg(8), &aml{})},
		{"bad If body", (&aml{}).ifThen((&aml{}).integer(1), (&aml{}).str("\xff"))},
		{"bad Notify target", (&aml{}).notify("toolong", 0x80)},
		{"bad method body", (&aml{}).method("_EVT", 1, false, (&aml{}).ifThen((&aml{}).arg(7), &aml{}))},
	}
	for _, c := range cases {
		if b, err := c.a.integer(7).result(); err == nil {
			t.Errorf("%s: encoded % x, want an error", c.name, b)
		}
	}
}

func TestResources(t *testing.T) {
	cases := []struct {
		name string
		r    *resources
		want []byte
	}{
		{"IO", (&resources{}).io(0x3f8, 8), []byte{0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08}},
		{"IRQNoFlags", (&resources{}).irq(4), []byte{0x22, 0x10, 0x00}},
		{"IRQNoFlags 9", (&resources{}).irq(9), []byte{0x22, 0x00, 0x02}},
		// Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {23}
		{"Interrupt edge high", (&resources{}).interrupt(23, true, false), []byte{0x89, 0x06, 0x00, 0x03, 0x01, 0x17, 0, 0, 0}},
		// Interrupt (ResourceConsumer, Level, ActiveLow, Exclusive) {0x12345}
		{"Interrupt level low", (&resources{}).interrupt(0x12345, false, true), []byte{0x89, 0x06, 0x00, 0x05, 0x01, 0x45, 0x23, 0x01, 0x00}},
		{"WordBusNumber", (&resources{}).word(spaceBus, 0, 0, 0xff), []byte{
			0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00,
			0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x01}},
		{"WordIO", (&resources{}).word(spaceIO, ioEntireRange, 0x0d00, 0xffff), []byte{
			0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03,
			0x00, 0x00, 0x00, 0x0d, 0xff, 0xff, 0x00, 0x00, 0x00, 0xf3}},
		{"DWordMemory", (&resources{}).dword(spaceMemory, memReadWrite, 0xc0000000, 0xcfffffff), []byte{
			0x87, 0x17, 0x00, 0x00, 0x0c, 0x01,
			0, 0, 0, 0, 0x00, 0x00, 0x00, 0xc0, 0xff, 0xff, 0xff, 0xcf, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x10}},
		{"QWordMemory", (&resources{}).qword(spaceMemory, memReadWrite, 1<<34, 1<<35-1), []byte{
			0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x01,
			0, 0, 0, 0, 0, 0, 0, 0,
			0, 0, 0, 0, 0x04, 0, 0, 0,
			0xff, 0xff, 0xff, 0xff, 0x07, 0, 0, 0,
			0, 0, 0, 0, 0, 0, 0, 0,
			0, 0, 0, 0, 0x04, 0, 0, 0}},
	}
	for _, c := range cases {
		got := c.r.end()
		want := append(c.want, 0x79, 0x00)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: % x; want % x", c.name, got, want)
		}
		// The length field of each descriptor matches its size.
		if n := len(c.want); c.want[0]&0x80 != 0 {
			if l := int(c.want[1]) | int(c.want[2])<<8; l != n-3 {
				t.Errorf("%s: large item length %d, descriptor has %d", c.name, l, n-3)
			}
		} else if l := int(c.want[0] & 7); l != n-1 {
			t.Errorf("%s: small item length %d, descriptor has %d", c.name, l, n-1)
		}
	}
}
