package boot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The .xz container (tukaani.org/xz/xz-file-format.txt), as the kernel's
// build writes it: `xz --check=crc32 --x86 --lzma2=dict=32MiB`, i.e. blocks
// whose filter chain is the x86 branch converter (BCJ) followed by LZMA2.
// github.com/ulikunitz/xz reads only LZMA2-only chains, so colibri parses
// the container itself, hands each block's LZMA2 data to ulikunitz/xz's
// lzma package and undoes the BCJ filter on the result.

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21

	xzCheckNone   = 0x00
	xzCheckCRC32  = 0x01
	xzCheckCRC64  = 0x04
	xzCheckSHA256 = 0x0a
)

var crc64Table = crc64.MakeTable(crc64.ECMA)

// unxz decompresses the .xz stream in into out, which must end up exactly
// full.
func unxz(out, in []byte) error {
	if len(in) < 12 || !bytes.Equal(in[:6], xzMagic) {
		return errors.New("xz: no stream header")
	}
	flags := in[6:8]
	if crc32.ChecksumIEEE(flags) != binary.LittleEndian.Uint32(in[8:12]) {
		return errors.New("xz: stream header CRC mismatch")
	}
	if flags[0] != 0 || flags[1] > 0x0f {
		return fmt.Errorf("xz: unknown stream flags %#x", flags)
	}
	check := flags[1]
	r := bytes.NewReader(in[12:])
	pos := 0
	for {
		first, err := r.ReadByte()
		if err != nil {
			return errors.New("xz: truncated before the index")
		}
		if first == 0 {
			// The index follows the last block; the sizes were checked
			// block by block, and out must be full.
			break
		}
		n, err := unxzBlock(out[pos:], r, first, check)
		if err != nil {
			return err
		}
		pos += n
	}
	if pos != len(out) {
		return fmt.Errorf("xz: the stream holds %d bytes, the image promises %d", pos, len(out))
	}
	return nil
}

// xzFilters is a block's filter chain as colibri supports it.
type xzFilters struct {
	x86      bool   // the x86 BCJ filter comes first
	x86Start uint32 // its start offset
	dictSize uint32 // LZMA2 dictionary size
}

// unxzBlock decodes one block (whose header starts with first, already
// read) into out and returns how many bytes it produced.
func unxzBlock(out []byte, r *bytes.Reader, first byte, check byte) (int, error) {
	hdr := make([]byte, (int(first)+1)*4)
	hdr[0] = first
	if _, err := io.ReadFull(r, hdr[1:]); err != nil {
		return 0, errors.New("xz: truncated block header")
	}
	body := hdr[:len(hdr)-4]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(hdr[len(hdr)-4:]) {
		return 0, errors.New("xz: block header CRC mismatch")
	}
	f, compressed, uncompressed, err := parseXZBlockHeader(body)
	if err != nil {
		return 0, err
	}
	if uncompressed >= 0 && uncompressed > int64(len(out)) {
		return 0, fmt.Errorf("xz: a block of %d bytes does not fit the %d the image has left", uncompressed, len(out))
	}
	start := r.Size() - int64(r.Len())
	// No match reaches further back than the output so far: a dictionary
	// larger than the output is never used.
	dict := max(lzma.MinDictCap, min(int(f.dictSize), len(out)))
	lz, err := lzma.Reader2Config{DictCap: dict}.NewReader2(r)
	if err != nil {
		return 0, fmt.Errorf("xz: %w", err)
	}
	n, err := readUpTo(out, lz)
	if err != nil {
		return 0, fmt.Errorf("xz: %w", err)
	}
	data := out[:n]
	used := r.Size() - int64(r.Len()) - start
	if (compressed >= 0 && used != compressed) || (uncompressed >= 0 && int64(n) != uncompressed) {
		return 0, errors.New("xz: block sizes differ from its header")
	}
	// Block padding to a multiple of four, then the check.
	for ; used%4 != 0; used++ {
		if b, err := r.ReadByte(); err != nil || b != 0 {
			return 0, errors.New("xz: bad block padding")
		}
	}
	want, err := xzCheckField(r, check)
	if err != nil {
		return 0, err
	}
	if f.x86 {
		unBCJx86(data, f.x86Start)
	}
	// The check covers the block's uncompressed data: after the filters.
	if !xzCheckMatches(check, want, data) {
		return 0, errors.New("xz: block check mismatch (corrupt data)")
	}
	return n, nil
}

// xzCheckField reads a block's check field.
func xzCheckField(r *bytes.Reader, check byte) ([]byte, error) {
	var size int
	switch check {
	case xzCheckNone:
	case xzCheckCRC32:
		size = 4
	case xzCheckCRC64:
		size = 8
	case xzCheckSHA256:
		size = 32
	default:
		return nil, fmt.Errorf("xz: unsupported check type %#x", check)
	}
	want := make([]byte, size)
	if _, err := io.ReadFull(r, want); err != nil {
		return nil, errors.New("xz: truncated block check")
	}
	return want, nil
}

// xzCheckMatches compares a check field with the data it covers.
func xzCheckMatches(check byte, want, data []byte) bool {
	le := binary.LittleEndian
	switch check {
	case xzCheckCRC32:
		return crc32.ChecksumIEEE(data) == le.Uint32(want)
	case xzCheckCRC64:
		return crc64.Checksum(data, crc64Table) == le.Uint64(want)
	case xzCheckSHA256:
		sum := sha256.Sum256(data)
		return bytes.Equal(sum[:], want)
	}
	return true
}

// parseXZBlockHeader reads a block header (without its CRC): the filter
// chain and the optional compressed and uncompressed sizes (-1: absent).
func parseXZBlockHeader(h []byte) (f xzFilters, compressed, uncompressed int64, err error) {
	compressed, uncompressed = -1, -1
	flags := h[1]
	if flags&0x3c != 0 {
		return f, 0, 0, errors.New("xz: reserved block flags set")
	}
	nfilters := int(flags&3) + 1
	p := h[2:]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 || n > 9 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	if flags&0x40 != 0 {
		v, ok := next()
		if !ok || v == 0 || v > 1<<40 {
			return f, 0, 0, errors.New("xz: bad compressed size in a block header")
		}
		compressed = int64(v)
	}
	if flags&0x80 != 0 {
		v, ok := next()
		if !ok || v > 1<<40 {
			return f, 0, 0, errors.New("xz: bad uncompressed size in a block header")
		}
		uncompressed = int64(v)
	}
	for i := 0; i < nfilters; i++ {
		id, ok1 := next()
		psize, ok2 := next()
		if !ok1 || !ok2 || psize > uint64(len(p)) {
			return f, 0, 0, errors.New("xz: truncated filter flags")
		}
		props := p[:psize]
		p = p[psize:]
		last := i == nfilters-1
		switch {
		case id == xzFilterX86 && !last && i == 0:
			switch len(props) {
			case 0:
			case 4:
				f.x86Start = binary.LittleEndian.Uint32(props)
			default:
				return f, 0, 0, errors.New("xz: bad x86 filter properties")
			}
			f.x86 = true
		case id == xzFilterLZMA2 && last:
			if len(props) != 1 || props[0] > 40 {
				return f, 0, 0, errors.New("xz: bad LZMA2 properties")
			}
			d := props[0]
			if d >= 40 {
				return f, 0, 0, errors.New("xz: LZMA2 dictionary too large")
			}
			f.dictSize = (2 | uint32(d&1)) << (d/2 + 11)
			if f.dictSize > maxDictSize {
				return f, 0, 0, fmt.Errorf("xz: LZMA2 dictionary of %d bytes is above colibri's %d", f.dictSize, maxDictSize)
			}
		default:
			return f, 0, 0, fmt.Errorf("%w (xz filter chain with filter %#x at %d of %d: colibri reads x86 BCJ + LZMA2)", errUnsupported, id, i+1, nfilters)
		}
	}
	for _, b := range p {
		if b != 0 {
			return f, 0, 0, errors.New("xz: bad block header padding")
		}
	}
	return f, compressed, uncompressed, nil
}

// readUpTo reads r to its end into out, failing if r holds more than out
// has room for.
func readUpTo(out []byte, r io.Reader) (int, error) {
	n := 0
	var one [1]byte
	for stalls := 0; stalls < 100; {
		buf := out[n:]
		if len(buf) == 0 {
			buf = one[:]
		}
		m, err := r.Read(buf)
		if m > 0 && len(out) == n {
			return n, errors.New("the stream holds more than the image promises")
		}
		n += m
		switch {
		case err == io.EOF:
			return n, nil
		case err != nil:
			return n, err
		case m == 0:
			stalls++
		}
	}
	return n, errors.New("the decompressor makes no progress")
}

// unBCJx86 undoes the x86 branch/call/jump filter in place: the encoder
// turned the relative 32-bit targets of E8 (CALL) and E9 (JMP) opcodes into
// absolute ones (position + 5 + rel) so that repeated calls to one target
// compress well; decoding subtracts the position again. Which E8/E9 bytes
// were converted depends on a 3-bit history of E8/E9 bytes seen in the
// previous three positions and on the target's top byte being 0x00 or 0xFF
// (a near target), exactly as the encoder decided.
func unBCJx86(buf []byte, start uint32) {
	// For each history mask: may the current byte be converted at all,
	// and which byte of the operand the history points into.
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	operandByte := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	near := func(b byte) bool { return b == 0x00 || b == 0xff }

	var mask uint32
	last := -5 // position of the previous E8/E9 byte, far away at first
	for i := 0; i+4 < len(buf); i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		if d := i - last; d > 3 {
			mask = 0
		} else {
			mask = (mask << uint(d-1)) & 7
			if mask != 0 && (!allowed[mask] || near(buf[i+4-int(operandByte[mask])])) {
				last = i
				mask = mask<<1 | 1
				continue
			}
		}
		last = i
		if !near(buf[i+4]) {
			mask = mask<<1 | 1
			continue
		}
		v := binary.LittleEndian.Uint32(buf[i+1:])
		var rel uint32
		for {
			rel = v - (start + uint32(i) + 5)
			if mask == 0 {
				break
			}
			shift := operandByte[mask] * 8
			if !near(byte(rel >> (24 - shift))) {
				break
			}
			v = rel ^ (1<<(32-shift) - 1)
		}
		// Sign-extend from bit 24, as the encoder stored it.
		rel &= 0x01ffffff
		if rel&0x01000000 != 0 {
			rel |= 0xff000000
		}
		binary.LittleEndian.PutUint32(buf[i+1:], rel)
		i += 4
	}
}
