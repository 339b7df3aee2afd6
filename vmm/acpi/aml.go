package acpi

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// AML opcodes and prefixes (ACPI 6.5, section 20.3).
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
	opMethod       = 0x14
	opDualName     = 0x2e
	opMultiName    = 0x2f
	opExtPrefix    = 0x5b
	opDevice       = 0x82 // ExtOpPrefix 0x82
	opArg0         = 0x68 // Arg0–Arg6: 0x68–0x6e
	opNotify       = 0x86
	opLEqual       = 0x93
	opIf           = 0xa0
	opReturn       = 0xa4
	opOnes         = 0xff

	rootChar   = '\\'
	parentChar = '^'
)

// maxPkgLength is the largest value a 4-byte PkgLength holds (28 bits).
const maxPkgLength = 1<<28 - 1

// pkgLength encodes the PkgLength of a body of n bytes. The encoded value
// counts the PkgLength bytes themselves: one byte holds up to 63; with one
// to three follow bytes the lead byte keeps 4 bits and each follow byte
// adds 8 (ACPI 6.5, 20.2.4).
func pkgLength(n int) ([]byte, error) {
	if n < 0 {
		return nil, fmt.Errorf("AML package body of %d bytes", n)
	}
	if n+1 <= 0x3f {
		return []byte{byte(n + 1)}, nil
	}
	for follow := 1; follow <= 3; follow++ {
		total := n + 1 + follow
		if total >= 1<<(4+8*follow) {
			continue
		}
		b := []byte{byte(follow<<6) | byte(total&0x0f)}
		for i := 0; i < follow; i++ {
			b = append(b, byte(total>>(4+8*i)))
		}
		return b, nil
	}
	return nil, fmt.Errorf("AML package body of %d bytes exceeds the PkgLength limit of %d", n, maxPkgLength)
}

// decodePkgLength reads a PkgLength from the start of b and returns the
// value it encodes (which includes its own bytes) and how many bytes it
// took.
func decodePkgLength(b []byte) (value, size int, err error) {
	if len(b) == 0 {
		return 0, 0, fmt.Errorf("AML PkgLength: no bytes")
	}
	follow := int(b[0] >> 6)
	if follow == 0 {
		return int(b[0] & 0x3f), 1, nil
	}
	if len(b) < 1+follow {
		return 0, 0, fmt.Errorf("AML PkgLength: lead byte %#x wants %d more bytes, have %d", b[0], follow, len(b)-1)
	}
	if b[0]&0x30 != 0 {
		return 0, 0, fmt.Errorf("AML PkgLength: lead byte %#x has reserved bits 4-5 set", b[0])
	}
	value = int(b[0] & 0x0f)
	for i := 0; i < follow; i++ {
		value |= int(b[1+i]) << (4 + 8*i)
	}
	return value, 1 + follow, nil
}

// nameString encodes an AML NameString such as `\_SB.PCI0`, `_HID` or
// `^PCI0`: root or parent prefixes, then a NameSeg, a DualNamePath, a
// MultiNamePath or, for a bare prefix, a NullName (ACPI 6.5, 20.2.2).
func nameString(path string) ([]byte, error) {
	var b []byte
	rest := path
	if strings.HasPrefix(rest, `\`) {
		b, rest = append(b, rootChar), rest[1:]
	} else {
		for strings.HasPrefix(rest, "^") {
			b, rest = append(b, parentChar), rest[1:]
		}
	}
	if rest == "" {
		if len(b) == 0 {
			return nil, fmt.Errorf("AML name: empty")
		}
		return append(b, 0), nil
	}
	segs := strings.Split(rest, ".")
	switch n := len(segs); {
	case n == 1:
	case n == 2:
		b = append(b, opDualName)
	case n <= 255:
		b = append(b, opMultiName, byte(n))
	default:
		return nil, fmt.Errorf("AML name %q: %d segments, at most 255", path, n)
	}
	for _, s := range segs {
		seg, err := nameSeg(s)
		if err != nil {
			return nil, fmt.Errorf("AML name %q: %w", path, err)
		}
		b = append(b, seg...)
	}
	return b, nil
}

// nameSeg checks a 1–4 character name segment and pads it with '_'.
func nameSeg(s string) ([]byte, error) {
	if len(s) == 0 || len(s) > 4 {
		return nil, fmt.Errorf("segment %q must have 1 to 4 characters", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		lead := c == '_' || c >= 'A' && c <= 'Z'
		if !lead && (i == 0 || c < '0' || c > '9') {
			return nil, fmt.Errorf("segment %q: character %q not allowed there", s, c)
		}
	}
	return []byte(s + strings.Repeat("_", 4-len(s))), nil
}

// eisaID compresses a "PNP0A03"-style id (three capital letters, four hex
// digits) into the 32-bit value _HID and _CID hold: 5 bits per letter
// (A=1) big-endian in the first two bytes, then the product number
// big-endian in the last two.
func eisaID(id string) (uint32, error) {
	if len(id) != 7 {
		return 0, fmt.Errorf("EISA id %q: want three capital letters and four hex digits", id)
	}
	var vendor uint16
	for i := 0; i < 3; i++ {
		c := id[i]
		if c < 'A' || c > 'Z' {
			return 0, fmt.Errorf("EISA id %q: %q is not a capital letter", id, c)
		}
		vendor = vendor<<5 | uint16(c-'A'+1)
	}
	var product uint16
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
		product = product<<4 | uint16(d)
	}
	b := []byte{byte(vendor >> 8), byte(vendor), byte(product >> 8), byte(product)}
	return binary.LittleEndian.Uint32(b), nil
}

// aml accumulates an AML byte stream. Every method appends one term or
// object; the first encoding error sticks and is reported by result, so a
// tree of terms can be built without checking each step.
type aml struct {
	b   []byte
	err error
}

// result returns the encoded bytes or the first error.
func (a *aml) result() ([]byte, error) {
	if a.err != nil {
		return nil, a.err
	}
	return a.b, nil
}

func (a *aml) fail(err error) *aml {
	if err != nil && a.err == nil {
		a.err = err
	}
	return a
}

// adopt takes over the sticky error of a nested body.
func (a *aml) adopt(o *aml) *aml { return a.fail(o.err) }

func (a *aml) raw(b ...byte) *aml { a.b = append(a.b, b...); return a }

func (a *aml) le(v uint64, n int) *aml {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], v)
	return a.raw(buf[:n]...)
}

// name appends a NameString.
func (a *aml) name(path string) *aml {
	n, err := nameString(path)
	return a.fail(err).raw(n...)
}

// integer appends v as ZeroOp, OneOp, OnesOp or the shortest of
// BytePrefix, WordPrefix, DWordPrefix and QWordPrefix data.
func (a *aml) integer(v uint64) *aml {
	switch {
	case v == 0:
		return a.raw(opZero)
	case v == 1:
		return a.raw(opOne)
	case v == ^uint64(0):
		return a.raw(opOnes)
	case v <= 0xff:
		return a.raw(opBytePrefix, byte(v))
	case v <= 0xffff:
		return a.raw(opWordPrefix).le(v, 2)
	case v <= 0xffffffff:
		return a.raw(opDWordPrefix).le(v, 4)
	}
	return a.raw(opQWordPrefix).le(v, 8)
}

// str appends a String: ASCII characters 0x01–0x7f, NUL-terminated.
func (a *aml) str(s string) *aml {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] > 0x7f {
			return a.fail(fmt.Errorf("AML string %q: byte %#x at %d is not ASCII 0x01-0x7f", s, s[i], i))
		}
	}
	return a.raw(opStringPrefix).raw([]byte(s)...).raw(0)
}

// eisaID appends an EISA id as a DWord integer, as ASL's EisaId() does.
func (a *aml) eisaID(id string) *aml {
	v, err := eisaID(id)
	return a.fail(err).raw(opDWordPrefix).le(uint64(v), 4)
}

// pkg appends op, the PkgLength of body, and body.
func (a *aml) pkg(body []byte, op ...byte) *aml {
	l, err := pkgLength(len(body))
	return a.fail(err).raw(op...).raw(l...).raw(body...)
}

// named appends op PkgLength NameString body: the shape of Scope and
// Device.
func (a *aml) named(path string, body *aml, op ...byte) *aml {
	inner := (&aml{}).name(path).raw(body.b...)
	return a.adopt(body).adopt(inner).pkg(inner.b, op...)
}

// nameObj appends Name(path, obj), obj being one encoded data object.
func (a *aml) nameObj(path string, obj *aml) *aml {
	return a.adopt(obj).raw(opName).name(path).raw(obj.b...)
}

// scope appends Scope(path) { body }.
func (a *aml) scope(path string, body *aml) *aml { return a.named(path, body, opScope) }

// device appends Device(path) { body }.
func (a *aml) device(path string, body *aml) *aml {
	return a.named(path, body, opExtPrefix, opDevice)
}

// method appends Method(path, args, Serialized|NotSerialized) { body }.
func (a *aml) method(path string, args int, serialized bool, body *aml) *aml {
	if args < 0 || args > 7 {
		return a.fail(fmt.Errorf("AML method %q: %d arguments, at most 7", path, args))
	}
	flags := byte(args)
	if serialized {
		flags |= 1 << 3
	}
	inner := (&aml{}).name(path).raw(flags).raw(body.b...)
	return a.adopt(body).adopt(inner).pkg(inner.b, opMethod)
}

// arg appends ArgN, the method argument n (0–6).
func (a *aml) arg(n int) *aml {
	if n < 0 || n > 6 {
		return a.fail(fmt.Errorf("AML Arg%d: a method has Arg0 to Arg6", n))
	}
	return a.raw(opArg0 + byte(n))
}

// lequal appends LEqual(x, y), the logical comparison that is true (Ones)
// when the two integers are equal.
func (a *aml) lequal(x, y *aml) *aml {
	return a.adopt(x).adopt(y).raw(opLEqual).raw(x.b...).raw(y.b...)
}

// ifThen appends If(predicate) { body }.
func (a *aml) ifThen(predicate, body *aml) *aml {
	inner := (&aml{}).raw(predicate.b...).raw(body.b...)
	return a.adopt(predicate).adopt(body).pkg(inner.b, opIf)
}

// notify appends Notify(path, value): it queues notification value for
// the device at path to the OS's handler of that device.
func (a *aml) notify(path string, value uint64) *aml {
	return a.raw(opNotify).name(path).integer(value)
}

// ret appends Return(obj).
func (a *aml) ret(obj *aml) *aml { return a.adopt(obj).raw(opReturn).raw(obj.b...) }

// packageOf appends Package(n) { integers... }.
func (a *aml) packageOf(vals ...uint64) *aml {
	if len(vals) > 255 {
		return a.fail(fmt.Errorf("AML package of %d elements, at most 255", len(vals)))
	}
	inner := (&aml{}).raw(byte(len(vals)))
	for _, v := range vals {
		inner.integer(v)
	}
	return a.pkg(inner.b, opPackage)
}

// buffer appends Buffer(len(data)) { data }.
func (a *aml) buffer(data []byte) *aml {
	inner := (&aml{}).integer(uint64(len(data))).raw(data...)
	return a.pkg(inner.b, opBuffer)
}
