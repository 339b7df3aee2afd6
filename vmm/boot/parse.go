package boot

import (
	"fmt"
	"slices"
	"time"
)

// Options say how Parse treats a bzImage.
type Options struct {
	// GuestDecompress leaves a bzImage's kernel compressed, for the
	// guest's own decompressor (as ParseBzImage does).
	GuestDecompress bool
	// CacheDir, if set, is a directory (created if absent) where
	// decompressed kernels are kept, named by the SHA-256 of their
	// bzImage, so that booting the same bzImage again reads its kernel
	// instead of decompressing it. See DefaultCacheDir.
	CacheDir string
	// HostFormats are the compression formats decompressed on the host
	// when CacheDir is empty (nil: FastFormats). With a cache, every
	// format colibri reads is decompressed once and cached.
	HostFormats []string
	// FillLater, with a CacheDir, leaves a kernel of a slow format (not in
	// HostFormats) that is not in the cache yet to the guest's
	// decompressor this time, and sets Kernel.FillCache for the caller
	// to run beside the guest, so that the next boot finds it cached: a
	// first boot is then as fast as the guest makes it, the later ones
	// as fast as a vmlinux.
	FillLater bool
}

// FastFormats are the formats whose Go decompressors are fast enough to
// win on the host even without a cache: Debian's 65.9 MB kernel decodes in
// 0.14–0.26 s from gzip, zstd or lz4 on the development VM, against
// 1.8 s from bzip2 and 1.7–2.6 s from xz (LZMA). In the sandbox Go's xz
// takes ~3× as long as the guest's own decompressor (docs/PERF.md): xz,
// lzma and bzip2 kernels are worth decompressing on the host only once,
// into the cache.
var FastFormats = []string{Gzip, Zstd, LZ4}

// Parse parses a kernel image: an uncompressed ELF vmlinux, or a bzImage
// whose kernel colibri decompresses itself when its format is one of
// FastFormats (ParseWith with no Options).
func Parse(img []byte) (*Kernel, error) { return ParseWith(img, Options{}) }

// ParseWith parses a kernel image: an uncompressed ELF vmlinux, or a
// bzImage. A bzImage's compressed kernel (found through the setup header's
// payload_offset and payload_length, its format recognised by its magic)
// is decompressed on the host, or read from o.CacheDir, and the guest then
// enters the ELF kernel inside it directly, as it enters a vmlinux, with
// the zero page still filled from the bzImage's setup header. A format
// colibri does not read, or a payload that fails to decompress or is not
// an ELF kernel, is left to the guest's own decompressor: Kernel.Note says
// why. Only a file that is no kernel at all is an error.
//
// The Kernel refers to img's bytes (and, for a kernel read from the cache,
// to the mapped cache entry, until Close); FillCache reads img too.
func ParseWith(img []byte, o Options) (*Kernel, error) {
	if len(img) >= 4 && string(img[:4]) == elfMagic {
		return ParseELF(img)
	}
	k, err := ParseBzImage(img)
	if err != nil {
		return nil, err
	}
	if o.GuestDecompress {
		k.Note = "left to the guest's decompressor, as asked"
		return k, nil
	}
	payload, err := compressedPayload(k.Setup, k.Payload)
	if err != nil {
		k.Note = "left to the guest's decompressor: " + err.Error()
		return k, nil
	}
	k.Compression = payloadFormat(payload)
	fast := o.HostFormats
	if fast == nil {
		fast = FastFormats
	}
	if !slices.Contains(hostFormats, k.Compression) {
		k.Note = fmt.Sprintf("kernel left to the guest's decompressor: %v (%s)", errUnsupported, orUnknown(k.Compression))
		return k, nil
	}
	if o.CacheDir == "" && !slices.Contains(fast, k.Compression) {
		k.Note = fmt.Sprintf("%s kernel left to the guest's decompressor: no cache, and %s is decompressed on the host only with one",
			orUnknown(k.Compression), orUnknown(k.Compression))
		return k, nil
	}
	limit := min(uint64(MaxKernelSize), k.InitSize)
	var c *cache
	if size := payloadSize(payload); o.CacheDir != "" && size > 0 && size <= limit {
		c = newCache(o.CacheDir, img)
		if vmlinux, err := c.get(size); err == nil {
			if err := k.setELF(vmlinux.Bytes()); err == nil {
				k.Decompressed, k.Cached = true, true
				k.file = vmlinux
				k.Note = fmt.Sprintf("%s kernel read from the cache %s", k.Compression, c.path)
				return k, nil
			}
			vmlinux.Close()
		}
	}
	if c != nil && o.FillLater && !slices.Contains(fast, k.Compression) {
		k.Note = fmt.Sprintf("%s kernel left to the guest's decompressor this time: not cached yet", k.Compression)
		format := k.Compression
		k.FillCache = func() error {
			return c.fill(payloadSize(payload), func(out []byte) error {
				_, err := decompressPayloadInto(format, payload, limit, func(uint64) ([]byte, error) { return out, nil })
				if err != nil {
					return fmt.Errorf("decompressing the %s kernel for the cache: %w", format, err)
				}
				if err := (&Kernel{}).setELF(out); err != nil {
					return fmt.Errorf("the decompressed %s kernel is not one colibri boots: %w", format, err)
				}
				return nil
			})
		}
		return k, nil
	}
	start := time.Now()
	vmlinux, err := decompressPayload(k.Compression, payload, limit)
	if err != nil {
		k.Note = fmt.Sprintf("%s kernel left to the guest's decompressor: %v", orUnknown(k.Compression), err)
		return k, nil
	}
	took := time.Since(start)
	if err := k.setELF(vmlinux); err != nil { // leaves k as it was
		k.Note = fmt.Sprintf("%s kernel left to the guest's decompressor: the decompressed kernel is not one colibri boots: %v", k.Compression, err)
		return k, nil
	}
	k.Decompressed = true
	k.Note = fmt.Sprintf("%s kernel decompressed by colibri in %v", k.Compression, took.Round(time.Millisecond))
	if c != nil {
		if err := c.put(vmlinux); err != nil {
			k.Note += "; not cached: " + err.Error()
		} else {
			k.Note += "; cached as " + c.path
		}
	}
	return k, nil
}
