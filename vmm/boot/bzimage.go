// Package boot loads a Linux x86-64 kernel the way the boot protocol
// (Documentation/arch/x86/boot.rst) asks a 64-bit boot loader to: it parses
// the bzImage setup header, places the kernel, initrd and command line in
// guest memory, fills the zero page (boot_params) with an e820 map, and
// builds the page tables and GDT for the 64-bit entry point.
package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Setup header offsets inside a bzImage (and the zero page).
const (
	offSetupSects      = 0x1f1
	offSyssize         = 0x1f4
	offVidMode         = 0x1fa
	offJump            = 0x200
	offHeaderMagic     = 0x202
	offVersion         = 0x206
	offTypeOfLoader    = 0x210
	offLoadflags       = 0x211
	offRamdiskImage    = 0x218
	offRamdiskSize     = 0x21c
	offHeapEndPtr      = 0x224
	offCmdLinePtr      = 0x228
	offInitrdAddrMax   = 0x22c
	offKernelAlignment = 0x230
	offRelocatable     = 0x234
	offXloadflags      = 0x236
	offCmdlineSize     = 0x238
	offPrefAddress     = 0x258
	offInitSize        = 0x260

	headerMagic = 0x53726448 // "HdrS"

	loadflagLoadedHigh    = 1 << 0
	loadflagCanUseHeap    = 1 << 7
	xlfKernel64           = 1 << 0
	xlfCanBeLoadedAbove4G = 1 << 1

	// minProtocol is 2.12: xloadflags and the 64-bit entry at +0x200.
	minProtocol = 0x020c
)

// ErrNotKernel is wrapped when a file is not a bzImage colibri can boot.
var ErrNotKernel = errors.New("not a Linux kernel image (bzImage or x86-64 ELF vmlinux)")

// Kernel is a parsed kernel image: a bzImage, or an ELF vmlinux (which is
// also what a bzImage becomes when colibri decompresses its kernel).
type Kernel struct {
	// Setup is the real-mode setup code and header (setup_sects+1 sectors).
	Setup []byte
	// Payload is the protected-mode kernel loaded at LoadAddr.
	Payload []byte
	// Version is the boot protocol version, e.g. 0x020f.
	Version uint16
	// InitSize is the memory the kernel needs from its load address while
	// decompressing and before it sets up its own memory management.
	InitSize uint64
	// PrefAddress is the kernel's preferred load address.
	PrefAddress uint64
	// Alignment is the physical alignment a relocatable kernel needs.
	Alignment uint64
	// Relocatable says the kernel may run at an address other than
	// PrefAddress.
	Relocatable bool
	// InitrdAddrMax is the highest address the initrd may end at.
	InitrdAddrMax uint64
	// CmdlineSize is the longest command line the kernel accepts.
	CmdlineSize uint32

	// ELF is set for an uncompressed vmlinux, and for a bzImage whose
	// kernel colibri decompressed itself: Segments and Entry replace
	// Payload, and the guest starts in the kernel proper, skipping its
	// decompressor. (Setup is still set for a bzImage: its header fills
	// the zero page.)
	ELF      bool
	Segments []Segment
	Entry    uint64

	// Compression is the format of a bzImage's compressed kernel (Gzip,
	// XZ, ...; "" for an ELF vmlinux or an unrecognised payload).
	Compression string
	// Decompressed is set when colibri decompressed the bzImage's kernel
	// (or read it from its cache) and boots the ELF inside.
	Decompressed bool
	// Cached is set when the decompressed kernel came from the cache.
	Cached bool
	// FillCache, when set (Options.FillLater), decompresses the kernel
	// into the cache for the next boot; the caller runs it, typically in
	// the background at a low priority. It holds on to the image.
	FillCache func() error
	// Note says, for a debug log, how a bzImage's kernel was handled:
	// decompressed (or read from the cache), or left to the guest's own
	// decompressor and why.
	Note string

	// file is the mapped cache entry Segments point into (Cached).
	file *File
}

// Close releases what ParseWith mapped for k (a kernel read from the
// cache): once k is loaded, its Segments must not be used any more.
// Reading them before then may fault if the entry is truncated: do it in
// Guard.
func (k *Kernel) Close() error {
	if k.file == nil {
		return nil
	}
	err := k.file.Close()
	k.file, k.Segments = nil, nil
	return err
}

// ParseBzImage checks and parses a bzImage, leaving its kernel compressed
// for the guest's own decompressor (see ParseWith for the alternative).
func ParseBzImage(img []byte) (*Kernel, error) {
	if len(img) < 0x264 {
		return nil, fmt.Errorf("%w: %d bytes is too short for a setup header", ErrNotKernel, len(img))
	}
	le := binary.LittleEndian
	if le.Uint32(img[offHeaderMagic:]) != headerMagic || le.Uint16(img[0x1fe:]) != 0xaa55 {
		return nil, fmt.Errorf("%w: no boot signature or \"HdrS\" magic (an ELF vmlinux, a compressed file or another format?)", ErrNotKernel)
	}
	k := &Kernel{Version: le.Uint16(img[offVersion:])}
	if k.Version < minProtocol {
		return nil, fmt.Errorf("%w: boot protocol %d.%02d is older than 2.12, which 64-bit boot needs", ErrNotKernel, k.Version>>8, k.Version&0xff)
	}
	if img[offXloadflags]&xlfKernel64 == 0 {
		return nil, fmt.Errorf("%w: the kernel has no 64-bit entry point (a 32-bit kernel?)", ErrNotKernel)
	}
	setupSects := int(img[offSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	setupLen := (setupSects + 1) * 512
	syssize := uint64(le.Uint32(img[offSyssize:])) * 16
	if setupLen >= len(img) {
		return nil, fmt.Errorf("%w: truncated: setup code needs %d bytes, the file has %d", ErrNotKernel, setupLen, len(img))
	}
	payload := img[setupLen:]
	if uint64(len(payload)) < syssize {
		return nil, fmt.Errorf("%w: truncated: the header promises %d bytes of kernel, the file has %d", ErrNotKernel, syssize, len(payload))
	}
	k.Setup = img[:setupLen]
	k.Payload = payload
	k.InitSize = uint64(le.Uint32(img[offInitSize:]))
	k.PrefAddress = le.Uint64(img[offPrefAddress:])
	k.Alignment = uint64(le.Uint32(img[offKernelAlignment:]))
	k.Relocatable = img[offRelocatable] != 0
	k.InitrdAddrMax = uint64(le.Uint32(img[offInitrdAddrMax:]))
	k.CmdlineSize = le.Uint32(img[offCmdlineSize:])
	if k.InitSize == 0 {
		k.InitSize = uint64(len(payload)) * 4
	}
	if k.InitrdAddrMax == 0 {
		k.InitrdAddrMax = 0x37ffffff
	}
	if k.CmdlineSize == 0 {
		k.CmdlineSize = 255
	}
	return k, nil
}

// setupHeader returns the part of the setup sector that is the setup header,
// to be copied into the zero page at the same offset.
func (k *Kernel) setupHeader() []byte {
	if len(k.Setup) <= offJump+1 {
		return nil
	}
	end := offJump + 2 + int(k.Setup[offJump+1])
	if end > len(k.Setup) {
		end = len(k.Setup)
	}
	return k.Setup[offSetupSects:end]
}
