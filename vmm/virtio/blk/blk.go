package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
)

// Feature bits.
const (
	featureSizeMax = 1 << 1
	featureSegMax  = 1 << 2
	featureRO      = 1 << 5
	featureBlkSize = 1 << 6
	featureFlush   = 1 << 9
)

const (
	queueSize = 256
	segMax    = queueSize - 2
	sizeMax   = 1 << 20
)

// Stats counts what the device did.
type Stats struct {
	Reads, Writes, Flushes, Errors atomic.Uint64
}

// imageFile is what the device does I/O on: the image file (a test puts a
// failing one in its place).
type imageFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Blk is a virtio-blk device backed by a file.
type Blk struct {
	file     *os.File
	img      imageFile
	readOnly bool
	sectors  uint64
	id       [idLen]byte
	// lost is set once a write or a flush of the image failed: see do.
	lost atomic.Bool
	// onError is Config.OnError; halted is set once it was called.
	onError func(error)
	halted  atomic.Bool
	// failure is the error of the last failed write or flush.
	failure error
	// Stats are updated by the worker.
	Stats Stats

	chain virtq.Chain
	data  []virtq.Seg
}

// Config describes one disk.
type Config struct {
	// Path is the raw image file or block device.
	Path string
	// ReadOnly opens the image read-only and offers VIRTIO_BLK_F_RO.
	ReadOnly bool
	// Serial is what GET_ID returns: at most 20 printable ASCII bytes.
	// Empty returns an empty (all-zero) serial. It is the guest's only
	// name for the disk: never a host path.
	Serial string
	// OnError, if set, is called once when a write or a flush of the
	// image fails, instead of reporting the failure to the guest (QEMU's
	// werror=stop): the failed request is not completed, the device
	// serves no request after it, and the caller is expected to stop the
	// VM. Nil reports errors to the guest (VIRTIO_BLK_S_IOERR).
	OnError func(error)
}

// New opens cfg.Path as a raw disk image and locks it (flock): shared
// when read-only, exclusive otherwise, so no two devices (in this or
// another process) write one image, nor read one that another writes.
func New(cfg Config) (*Blk, error) {
	path, readOnly := cfg.Path, cfg.ReadOnly
	if len(cfg.Serial) > idLen {
		return nil, fmt.Errorf("disk image %s: serial %q is longer than %d bytes", path, cfg.Serial, idLen)
	}
	for _, c := range []byte(cfg.Serial) {
		if c < 0x20 || c > 0x7e {
			return nil, fmt.Errorf("disk image %s: serial %q is not printable ASCII", path, cfg.Serial)
		}
	}
	flag, lock, mode := os.O_RDWR, unix.LOCK_EX, "read-write"
	if readOnly {
		flag, lock, mode = os.O_RDONLY, unix.LOCK_SH, "read-only"
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("opening disk image: %w", err)
	}
	if err := flock(f, lock); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("disk image %s is in use: another device holds a lock on it that forbids opening it %s", path, mode)
		}
		return nil, fmt.Errorf("locking disk image %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk image %s: %w", path, err)
	}
	size := st.Size()
	if st.Mode()&os.ModeDevice != 0 {
		if size, err = f.Seek(0, 2); err != nil {
			f.Close()
			return nil, fmt.Errorf("sizing block device %s: %w", path, err)
		}
	} else if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("disk image %s is not a regular file or block device", path)
	}
	if size < SectorSize {
		f.Close()
		return nil, fmt.Errorf("disk image %s is %d bytes, smaller than one sector", path, size)
	}
	b := &Blk{file: f, img: f, readOnly: readOnly, sectors: uint64(size) / SectorSize, onError: cfg.OnError}
	copy(b.id[:], cfg.Serial)
	return b, nil
}

// flock takes a non-blocking flock(2) of kind how on f.
func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how|unix.LOCK_NB)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// Sectors returns the capacity in 512-byte sectors (a trailing partial
// sector of the file is not exposed).
func (b *Blk) Sectors() uint64 { return b.sectors }

// Type implements virtio.Device.
func (b *Blk) Type() uint16 { return virtio.TypeBlock }

// Features implements virtio.Device.
func (b *Blk) Features() uint64 {
	f := uint64(featureSizeMax | featureSegMax | featureBlkSize | featureFlush)
	if b.readOnly {
		f |= featureRO
	}
	return f
}

// QueueSizes implements virtio.Device.
func (b *Blk) QueueSizes() []uint16 { return []uint16{queueSize} }

// ReadConfig implements virtio.Device: capacity, size_max, seg_max, and
// blk_size.
func (b *Blk) ReadConfig(offset uint64, data []byte) {
	var cfg [24]byte
	binary.LittleEndian.PutUint64(cfg[0:], b.sectors)
	binary.LittleEndian.PutUint32(cfg[8:], sizeMax)
	binary.LittleEndian.PutUint32(cfg[12:], segMax)
	binary.LittleEndian.PutUint32(cfg[20:], SectorSize)
	for i := range data {
		if o := offset + uint64(i); o < uint64(len(cfg)) {
			data[i] = cfg[o]
		} else {
			data[i] = 0
		}
	}
}

// WriteConfig implements virtio.Device (nothing is writable).
func (b *Blk) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (b *Blk) Activate(uint64, []*virtio.Queue) error { return nil }

// Reset implements virtio.Device. It forgets a lost write (see do): the
// guest was told of it by the failed request and the failed flushes, and
// a driver that resets the device starts over.
func (b *Blk) Reset() { b.lost.Store(false) }

// Process implements virtio.Device: it serves every available request.
// With Config.OnError, the request whose write or flush fails is given
// back unanswered and the device stops serving (Halted).
func (b *Blk) Process(q *virtio.Queue) {
	if b.onError == nil {
		q.Drain(&b.chain, b.serve)
		return
	}
	if b.halted.Load() {
		return
	}
	// A request served after a lost write or flush is not answered: the
	// guest must not take it for done, nor for failed — the VM stops.
	if !q.DrainWhile(&b.chain, func(c *virtq.Chain) (uint32, bool) {
		n := b.serve(c)
		return n, !b.lost.Load()
	}) {
		b.halted.Store(true)
		b.onError(b.failure)
	}
}

// Halted reports whether a failed write or flush stopped the device
// (Config.OnError).
func (b *Blk) Halted() bool { return b.halted.Load() }

// serve runs one request and returns the bytes written to guest memory.
func (b *Blk) serve(c *virtq.Chain) uint32 {
	r, err := Parse(c, b.data)
	b.data = r.Data[:0]
	if err != nil {
		b.Stats.Errors.Add(1)
		if r.Status != nil {
			r.Status[0] = StatusIOErr
			return 1
		}
		return 0
	}
	status, n := b.do(&r)
	if status != StatusOK {
		b.Stats.Errors.Add(1)
	}
	r.Status[0] = status
	return n + 1
}

// do performs r and returns its status and payload bytes written.
func (b *Blk) do(r *Request) (byte, uint32) {
	switch r.Type {
	case TypeIn, TypeOut:
		length := r.DataLen()
		if length%SectorSize != 0 || r.Sector > b.sectors || length/SectorSize > b.sectors-r.Sector {
			return StatusIOErr, 0
		}
		if r.Type == TypeOut && b.readOnly {
			return StatusIOErr, 0
		}
		off := int64(r.Sector * SectorSize)
		var done uint32
		for _, s := range r.Data {
			var n int
			var err error
			if r.Type == TypeIn {
				n, err = b.img.ReadAt(s.Buf, off)
				done += uint32(n)
			} else {
				n, err = b.img.WriteAt(s.Buf, off)
			}
			if err != nil && !(r.Type == TypeIn && errors.Is(err, io.EOF) && n == len(s.Buf)) {
				if r.Type == TypeOut {
					b.failure = fmt.Errorf("writing %d bytes at sector %d: %w", len(s.Buf), r.Sector, err)
					b.lost.Store(true)
				}
				return StatusIOErr, done
			}
			off += int64(n)
		}
		if r.Type == TypeIn {
			b.Stats.Reads.Add(1)
		} else {
			b.Stats.Writes.Add(1)
		}
		return StatusOK, done
	case TypeFlush:
		// Policy: a flush promises that every write it follows is on
		// stable storage. Once a write or a flush failed, that cannot be
		// promised any more — and the host kernel reports a writeback
		// error to the first fsync only, so later fsyncs succeed although
		// the data is gone. So every flush after a failure fails too,
		// until the device is reset.
		b.Stats.Flushes.Add(1)
		if b.readOnly {
			return StatusOK, 0
		}
		if err := b.img.Sync(); err != nil {
			b.failure = fmt.Errorf("flushing: %w", err)
			b.lost.Store(true)
		}
		if b.lost.Load() {
			return StatusIOErr, 0
		}
		return StatusOK, 0
	case TypeGetID:
		var done uint32
		id := b.id[:]
		for _, s := range r.Data {
			n := copy(s.Buf, id)
			id = id[n:]
			done += uint32(n)
		}
		return StatusOK, done
	}
	return StatusUnsupp, 0
}

// Close closes the image file.
func (b *Blk) Close() error { return b.file.Close() }
