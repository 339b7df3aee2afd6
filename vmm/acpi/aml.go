package acpi

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// AML opcodes and prefixes (ACPI 6.5, section 20).
const (
	opZero         = 0x00
	opOne          = 0x01
	opName         = 0x08
	opBytePrefix   = 0x0a
	opWordPrefix   = 0x0b
	opDWordPrefix  = 0x0c
	opStringPrefix = 0x0d
	opQWordPrefix  = 0x0e
	opScope        = 0x10
	opBuffer       = 0x11
	opPackage      = 0x12
	opExtPrefix    = 0x5b
	opDevice       = 0x82 // after opExtPrefix
	opOnes         = 0xff

	rootChar        = '\\'
	dualNamePrefix  = 0x2e
	multiNamePrefix = 0x2f
)

// pkgLength encodes the PkgLength of a body of n bytes: the length counts
// the PkgLength bytes themselves.
func pkgLength(n int) ([]byte, error) {
	for extra := 0; extra <= 3; extra++ {
		total := n + 1 + extra
		switch {
		case extra == 0 && total < 1<<6:
			return []byte{byte(total)}, nil
		case extra > 0 && total < 1<<(4+8*extra):
			b := []byte{byte(extra<<6) | byte(total&0x0f)}
			for i := 0; i < extra; i++ {
				b = append(b, byte(total>>(4+8*i)))
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("AML package of %d bytes exceeds the 256 MiB PkgLength limit", n)
}

// nameString encodes an AML name path such as `\_SB.PCI0`, `_HID` or `^FOO`.
func nameString(path string) ([]byte, error) {
	var b []byte
	for strings.HasPrefix(path, `\`) || strings.HasPrefix(path, "^") {
		b = append(b, path[0])
		path = path[1:]
	}
	if path == "" {
		return append(b, 0), nil
	}
	segs := strings.Split(path, ".")
	switch len(segs) {
	case 1:
	case 2:
		b = append(b, dualNamePrefix)
	default:
		b = append(b, multiNamePrefix, byte(len(segs)))
	}
	for _, s := range segs {
		seg, err := nameSeg(s)
		if err != nil {
			return nil, err
		}
		b = append(b, seg...)
	}
	return b, nil
}

// nameSeg pads a 1–4 character name with '_'.
func nameSeg(s string) ([]byte, error) {
	if len(s) == 0 || len(s) > 4 {
		return nil, fmt.Errorf("AML name segment %q must have 1 to 4 characters", s)
	}
	for i, c := range s {
		lead := c == '_' || c >= 'A' && c <= 'Z'
		if !lead && (i == 0 || c < '0' || c > '9') {
			return nil, fmt.Errorf("AML name segment %q: bad character %q", s, c)
		}
	}
	return []byte(s + strings.Repeat("_", 4-len(s))), nil
}

// aml builds an AML byte stream; the first error sticks.
type aml struct {
	b   []byte
	err error
}

func (a *aml) bytes(b ...byte) *aml { a.b = append(a.b, b...); return a }

func (a *aml) name(path string) *aml {
	n, err := nameString(path)
	if err != nil && a.err == nil {
		a.err = err
	}
	return a.bytes(n...)
}

// integer appends the shortest encoding of v.
func (a *aml) integer(v uint64) *aml {
	switch {
	case v == 0:
		return a.bytes(opZero)
	case v == 1:
		return a.bytes(opOne)
	case v == ^uint64(0):
		return a.bytes(opOnes)
	case v <= 0xff:
		return a.bytes(opBytePrefix, byte(v))
	case v <= 0xffff:
		return a.bytes(opWordPrefix).le(v, 2)
	case v <= 0xffffffff:
		return a.bytes(opDWordPrefix).le(v, 4)
	}
	return a.bytes(opQWordPrefix).le(v, 8)
}

func (a *aml) le(v uint64, n int) *aml {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], v)
	return a.bytes(buf[:n]...)
}

func (a *aml) str(s string) *aml { return a.bytes(opStringPrefix).bytes([]byte(s)...).bytes(0) }

// eisaID appends the compressed EISA id of a "PNP0A03"-style string.
func (a *aml) eisaID(id string) *aml {
	v, err := eisaID(id)
	if err != nil && a.err == nil {
		a.err = err
	}
	return a.bytes(opDWordPrefix).le(uint64(v), 4)
}

func eisaID(id string) (uint32, error) {
	if len(id) != 7 {
		return 0, fmt.Errorf("EISA id %q: want three letters and four hex digits", id)
	}
	var v uint32
	for i := 0; i < 3; i++ {
		c := id[i]
		if c < 'A' || c > 'Z' {
			return 0, fmt.Errorf("EISA id %q: %q is not a capital letter", id, c)
		}
		v = v<<5 | uint32(c-'@')
	}
	var digits uint32
	for i := 3; i < 7; i++ {
		var d byte
		switch c := id[i]; {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("EISA id %q: %q is not a hex digit", id, c)
		}
		digits = digits<<4 | uint32(d)
	}
	// Bytes in memory: the 15-bit vendor code big-endian, then the product
	// number big-endian.
	b := []byte{byte(v >> 8), byte(v), byte(digits >> 8), byte(digits)}
	return binary.LittleEndian.Uint32(b), nil
}

// pkg appends op, a PkgLength and body.
func (a *aml) pkg(body []byte, op ...byte) *aml {
	l, err := pkgLength(len(body))
	if err != nil && a.err == nil {
		a.err = err
	}
	return a.bytes(op...).bytes(l...).bytes(body...)
}

// nameObj appends Name(path, <obj>) where obj is already encoded.
func (a *aml) nameObj(path string, obj []byte) *aml {
	return a.bytes(opName).name(path).bytes(obj...)
}

// scope appends Scope(path) { body }.
func (a *aml) scope(path string, body *aml) *aml {
	a.adopt(body)
	inner := (&aml{}).name(path).bytes(body.b...)
	a.adopt(inner)
	return a.pkg(inner.b, opScope)
}

// device appends Device(path) { body }.
func (a *aml) device(path string, body *aml) *aml {
	a.adopt(body)
	inner := (&aml{}).name(path).bytes(body.b...)
	a.adopt(inner)
	return a.pkg(inner.b, opExtPrefix, opDevice)
}

// packageOf appends Package(n) { integers... }.
func (a *aml) packageOf(vals ...uint64) *aml {
	inner := &aml{}
	inner.bytes(byte(len(vals)))
	for _, v := range vals {
		inner.integer(v)
	}
	return a.pkg(inner.b, opPackage)
}

// buffer appends Buffer(len(data)) { data }.
func (a *aml) buffer(data []byte) *aml {
	inner := (&aml{}).integer(uint64(len(data))).bytes(data...)
	return a.pkg(inner.b, opBuffer)
}

func (a *aml) adopt(o *aml) {
	if o.err != nil && a.err == nil {
		a.err = o.err
	}
}
