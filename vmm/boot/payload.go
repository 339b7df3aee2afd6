package boot

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// Setup header fields that locate the compressed kernel (protocol 2.08+).
const (
	offPayloadOffset = 0x248
	offPayloadLength = 0x24c
)

// MaxKernelSize bounds the decompressed kernel colibri accepts from a
// bzImage (real x86-64 kernels are 30–120 MiB decompressed).
const MaxKernelSize = 512 << 20

// maxDictSize bounds the LZMA/LZMA2 dictionary a payload may ask for: the
// kernel's own build uses 32 MiB (scripts/xz_wrap.sh), lzma -9 64 MiB.
const maxDictSize = 64 << 20

// maxZstdWindow bounds the window a zstd payload may declare (level 22,
// the kernel's, uses 128 MiB).
const maxZstdWindow = 256 << 20

// hostFormats are the formats colibri decompresses.
var hostFormats = []string{Gzip, Bzip2, LZMA, XZ, LZ4, Zstd}

// Compression formats a bzImage's kernel may be in (CONFIG_KERNEL_*).
const (
	Gzip  = "gzip"
	Bzip2 = "bzip2"
	LZMA  = "lzma"
	XZ    = "xz"
	LZO   = "lzo"
	LZ4   = "lz4"
	Zstd  = "zstd"
)

// errUnsupported marks a payload colibri recognises but does not
// decompress (or does not recognise at all): not an error, the guest's
// decompressor then does the work.
var errUnsupported = errors.New("colibri does not decompress this format")

// payloadFormat names the compression of a bzImage payload by its magic
// bytes ("" if none matches).
func payloadFormat(p []byte) string {
	switch {
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		return Gzip
	case bytes.HasPrefix(p, []byte("BZh")):
		return Bzip2
	case bytes.HasPrefix(p, []byte{0x5d, 0x00, 0x00}):
		// lzma -9: properties lc=3 lp=0 pb=2, then the dictionary size.
		return LZMA
	case bytes.HasPrefix(p, xzMagic):
		return XZ
	case bytes.HasPrefix(p, []byte{0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a}):
		return LZO
	case bytes.HasPrefix(p, []byte{0x02, 0x21, 0x4c, 0x18}):
		// lz4 -l: the legacy frame.
		return LZ4
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	}
	return ""
}

// compressedPayload returns the compressed kernel of a bzImage as the setup
// header locates it, relative to the protected-mode part (the payload).
func compressedPayload(setup, payload []byte) ([]byte, error) {
	le := binary.LittleEndian
	if len(setup) < offPayloadLength+4 {
		return nil, errors.New("the setup header is too short for payload_offset/payload_length")
	}
	off := uint64(le.Uint32(setup[offPayloadOffset:]))
	n := uint64(le.Uint32(setup[offPayloadLength:]))
	if n == 0 {
		return nil, errors.New("the setup header gives no payload (protocol before 2.08?)")
	}
	if off+n > uint64(len(payload)) {
		return nil, fmt.Errorf("the header's payload (%d bytes at %d) runs past the %d-byte kernel", n, off, len(payload))
	}
	return payload[off : off+n], nil
}

// decompressPayload decompresses a bzImage's compressed kernel (format as
// payloadFormat names it) into a buffer of exactly the size the image
// records in its last four bytes, which must not exceed limit. It returns
// errUnsupported (wrapped) for formats it does not handle.
func decompressPayload(format string, p []byte, limit uint64) ([]byte, error) {
	return decompressPayloadInto(format, p, limit, func(size uint64) ([]byte, error) { return make([]byte, size), nil })
}

// decompressPayloadInto is decompressPayload into the buffer alloc
// returns for the size the payload records (the cache fill's file
// mapping, so that a kernel of tens of MiB never sits in the heap).
func decompressPayloadInto(format string, p []byte, limit uint64, alloc func(size uint64) ([]byte, error)) ([]byte, error) {
	if len(p) < 8 {
		return nil, fmt.Errorf("a %d-byte payload is too short", len(p))
	}
	// Every compressed kernel ends with its decompressed size: gzip's
	// own trailer (ISIZE), or four bytes the kernel's build appends
	// after the stream for the other formats.
	size := payloadSize(p)
	stream := p[:len(p)-4]
	if format == Gzip {
		stream = p
	}
	if size == 0 || size > limit {
		return nil, fmt.Errorf("the payload says it decompresses to %d bytes, outside (0, %d]", size, limit)
	}
	out, err := alloc(size)
	if err != nil {
		return nil, err
	}
	if uint64(len(out)) != size {
		return nil, fmt.Errorf("a buffer of %d bytes for a %d-byte kernel", len(out), size)
	}
	var r io.Reader
	switch format {
	case Gzip:
		z, err := gzip.NewReader(bytes.NewReader(stream))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		z.Multistream(false)
		r = z
	case Bzip2:
		r = bzip2.NewReader(bytes.NewReader(stream))
	case LZMA:
		if len(stream) < lzma.HeaderLen {
			return nil, errors.New("lzma: truncated header")
		}
		if d := binary.LittleEndian.Uint32(stream[1:]); d > maxDictSize {
			return nil, fmt.Errorf("lzma: dictionary of %d bytes is above colibri's %d", d, maxDictSize)
		}
		// No match reaches further back than the output: a dictionary
		// larger than it would only cost memory.
		hdr := bytes.Clone(stream[:lzma.HeaderLen])
		if d := binary.LittleEndian.Uint32(hdr[1:]); uint64(d) > size {
			binary.LittleEndian.PutUint32(hdr[1:], uint32(max(size, lzma.MinDictCap)))
		}
		z, err := lzma.ReaderConfig{DictCap: maxDictSize}.NewReader(
			io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(stream[lzma.HeaderLen:])))
		if err != nil {
			return nil, err
		}
		r = z
	case XZ:
		if err := unxz(out, stream); err != nil {
			return nil, err
		}
		return out, nil
	case LZ4:
		r = lz4.NewReader(bytes.NewReader(stream))
	case Zstd:
		// DecodeAll decodes into out itself (no window buffer beside
		// it). A piped `zstd -22 --ultra` (the kernel's build) declares
		// a 128 MiB window whatever the size, which the bound must allow.
		z, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(max(size, maxZstdWindow)), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer z.Close()
		got, err := z.DecodeAll(stream, out[:0])
		switch {
		case err != nil:
			return nil, fmt.Errorf("zstd: %w", err)
		case uint64(len(got)) != size:
			return nil, fmt.Errorf("zstd: the stream holds %d bytes, the image promises %d", len(got), size)
		}
		return got, nil
	default:
		return nil, fmt.Errorf("%w (%s)", errUnsupported, orUnknown(format))
	}
	if err := readExactly(out, r); err != nil {
		return nil, fmt.Errorf("%s: %w", format, err)
	}
	return out, nil
}

// payloadSize is the decompressed size a compressed kernel records in its
// last four bytes (0 if it is too short to).
func payloadSize(p []byte) uint64 {
	if len(p) < 4 {
		return 0
	}
	return uint64(binary.LittleEndian.Uint32(p[len(p)-4:]))
}

func orUnknown(format string) string {
	if format == "" {
		return "unknown magic"
	}
	return format
}

// readExactly fills out from r and checks that r ends there.
func readExactly(out []byte, r io.Reader) error {
	n, err := io.ReadFull(r, out)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return fmt.Errorf("the stream ends after %d of the %d bytes the image promises", n, len(out))
		}
		return err
	}
	var one [1]byte
	switch m, err := r.Read(one[:]); {
	case m > 0:
		return fmt.Errorf("the stream holds more than the %d bytes the image promises", len(out))
	case err != nil && !errors.Is(err, io.EOF):
		return err
	}
	return nil
}
