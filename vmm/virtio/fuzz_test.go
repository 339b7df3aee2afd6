package virtio

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
)

// fuzzDev has a worker-served queue (0) and a self-served one (1); it
// records activations per reset.
type fuzzDev struct {
	live, activations atomic.Int64
	over              atomic.Bool
	chain             virtq.Chain
}

func (d *fuzzDev) Type() uint16                  { return TypeRNG }
func (d *fuzzDev) Features() uint64              { return 1<<0 | 1<<3 }
func (d *fuzzDev) QueueSizes() []uint16          { return []uint16{8, 16} }
func (d *fuzzDev) ReadConfig(_ uint64, b []byte) { clear(b) }
func (d *fuzzDev) WriteConfig(uint64, []byte)    {}
func (d *fuzzDev) ServesQueue(i int) bool        { return i == 1 }
func (d *fuzzDev) Reset()                        { d.live.Store(0) }
func (d *fuzzDev) Process(q *Queue) {
	q.Drain(&d.chain, func(c *virtq.Chain) uint32 { return c.WriteLen })
}
func (d *fuzzDev) Activate(uint64, []*Queue) error {
	d.activations.Add(1)
	if d.live.Add(1) > 1 {
		d.over.Store(true)
	}
	return nil
}

// snapshot is the transport's driver-visible configuration state.
type snapshot struct {
	phase              phase
	status, generation uint8
	drvFeatures        uint64
	devSel, drvSel     uint32
	queueSel           uint16
	configVector       uint32
	queues             string
	resetPending       bool
}

func (p *PCI) snapshot() snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := snapshot{phase: p.phase, status: p.status, generation: p.generation, drvFeatures: p.drvFeatures,
		devSel: p.devSel, drvSel: p.drvSel, queueSel: p.queueSel, configVector: p.configVector.Load(),
		queues: fmt.Sprint(p.queues), resetPending: p.resetPending}
	return s
}

// Fuzz ops: each is a byte [offset], a byte [mode], then the value's
// bytes. mode&3 picks the width (1, 2, 4, 8); mode>>2&3 picks the op.
const (
	opWrite = iota
	opRead
	opKick
	opPoke // store the value's low 16 bits as queue 0's avail.idx at 0x11002
)

// fuzzOp encodes one op for seeds.
func fuzzOp(op int, off uint8, width int, v uint64) []byte {
	w := map[int]byte{1: 0, 2: 1, 4: 2, 8: 3}[width]
	b := []byte{off, byte(op<<2) | w}
	var val [8]byte
	binary.LittleEndian.PutUint64(val[:], v)
	return append(b, val[:width]...)
}

// fuzzInit is a driver's whole initialisation: both queues at
// 0x10000/0x11000/0x12000 and 0x20000/0x21000/0x22000, then DRIVER_OK.
func fuzzInit() []byte {
	var b []byte
	wr := func(off uint8, width int, v uint64) { b = append(b, fuzzOp(opWrite, off, width, v)...) }
	wr(ccStatus, 1, 1)
	wr(ccStatus, 1, 3)
	wr(ccDriverFeatureSel, 4, 0)
	wr(ccDriverFeature, 4, 1<<3)
	wr(ccDriverFeatureSel, 4, 1)
	wr(ccDriverFeature, 4, 1)
	wr(ccStatus, 1, 11)
	for q := uint64(0); q < 2; q++ {
		base := 0x10000 * (q + 1)
		wr(ccQueueSelect, 2, q)
		wr(ccQueueDesc, 8, base)
		wr(ccQueueDriver, 8, base+0x1000)
		wr(ccQueueDevice, 8, base+0x2000)
		wr(ccQueueEnable, 2, 1)
	}
	wr(ccStatus, 1, 15)
	return b
}

// fuzzSeeds are the corpus kept in testdata/fuzz/FuzzCommonConfig.
func fuzzSeeds() [][]byte {
	boot := fuzzInit()
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	return [][]byte{
		boot,
		// Clear DRIVER_OK without a reset, then set it again.
		cat(boot, fuzzOp(opWrite, ccStatus, 1, 11), fuzzOp(opWrite, ccStatus, 1, 15)),
		// Reset and activate again; kicks in between.
		cat(boot, fuzzOp(opKick, 0, 2, 0), fuzzOp(opWrite, ccStatus, 1, 0), boot, fuzzOp(opKick, 0, 2, 0)),
		// Kicks on the notification port: queue 0, a queue that is not
		// there, a 4-byte write; then a reset.
		cat(boot, fuzzOp(opKick, 0x80, 2, 0), fuzzOp(opKick, 0x80, 2, 7), fuzzOp(opKick, 0x81, 4, 0),
			fuzzOp(opWrite, ccStatus, 1, 0)),
		// A broken ring (avail.idx jumps), kicked: NEEDS_RESET, then reset.
		cat(boot, fuzzOp(opPoke, 0, 2, 200), fuzzOp(opKick, 0, 2, 0), fuzzOp(opRead, ccStatus, 1, 0),
			fuzzOp(opWrite, ccStatus, 1, 0)),
		// DRIVER_OK without FEATURES_OK.
		cat(fuzzOp(opWrite, ccStatus, 1, 3), fuzzOp(opWrite, ccStatus, 1, 7)),
		// Queue writes while live, reads of every register.
		cat(boot, fuzzOp(opWrite, ccQueueSize, 2, 4), fuzzOp(opWrite, ccQueueDesc, 4, 0x40000),
			fuzzOp(opRead, ccQueueDesc, 8, 0), fuzzOp(opRead, ccNumQueues, 2, 0), fuzzOp(opWrite, ccStatus, 1, 0x8f)),
	}
}

// FuzzCommonConfig drives the device state machine with sequences of
// common-configuration writes, reads, kicks and ring pokes, and checks
// after every step: no panic; at most one activation per reset; DRIVER_OK
// never without FEATURES_OK; a refused write changes nothing; a reset
// returns everything to the initial state.
func FuzzCommonConfig(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		mem, err := memory.New(16<<20, memory.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		dev := &fuzzDev{}
		plat := NewFakePlatform()
		p, err := NewPCI(dev, mem, plat)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		p.barMapped(barIndex, 0xc0000000)
		p.barMapped(ioBarIndex, 0xc000)
		initial := p.snapshot()
		for step := 0; len(ops) >= 2 && step < 256; step++ {
			off, mode := uint64(ops[0]), ops[1]
			width := 1 << (mode & 3)
			ops = ops[2:]
			if len(ops) < width {
				return
			}
			data := append([]byte(nil), ops[:width]...)
			ops = ops[width:]
			before, refused := p.snapshot(), p.Stats().RefusedWrites
			switch int(mode>>2) & 3 {
			case opWrite:
				p.BARWrite(barIndex, commonOffset+off%commonLength, data)
			case opRead:
				p.BARRead(barIndex, commonOffset+off%commonLength, data)
			case opKick:
				if off&0x80 != 0 {
					// On the notification port: data names the queue
					// (any width, at either of its first two ports).
					p.BARWrite(ioBarIndex, off&1, data)
				} else {
					p.BARWrite(barIndex, notifyOffset+uint64(off%2)*notifyMult, data)
				}
			case opPoke:
				_ = mem.PutUint16(0x11002, binary.LittleEndian.Uint16(append(data, 0)))
			}
			after := p.snapshot()
			st := make([]byte, 1)
			p.BARRead(barIndex, commonOffset+ccStatus, st)
			if dev.over.Load() {
				t.Fatalf("step %d: a second activation without a reset", step)
			}
			if st[0]&statusDriverOK != 0 && st[0]&statusFeaturesOK == 0 {
				t.Fatalf("step %d: status %#x: DRIVER_OK without FEATURES_OK", step, st[0])
			}
			if dev.live.Load() > 0 && !p.featuresValid() {
				t.Fatalf("step %d: active with invalid features %#x", step, p.drvFeatures)
			}
			if p.Stats().RefusedWrites != refused && after != before {
				t.Fatalf("step %d: a refused write changed the state\n before %+v\n after  %+v", step, before, after)
			}
			if int(mode>>2)&3 == opWrite && off%commonLength == ccStatus && data[0] == 0 {
				want := initial
				want.generation = after.generation
				if after != want || st[0] != 0 || p.Err() != nil || dev.live.Load() != 0 {
					t.Fatalf("step %d: after reset: %+v (status %#x, err %v, live %d), want %+v",
						step, after, st[0], p.Err(), dev.live.Load(), want)
				}
				if n := plat.Registered(); n != 0 {
					t.Fatalf("step %d: %d ioeventfds left after reset", step, n)
				}
			}
		}
	})
}

// TestFuzzSeedsReach checks that the seeds get where they are meant to:
// the initialisation activates the device, the broken ring sets
// NEEDS_RESET.
func TestFuzzSeedsReach(t *testing.T) {
	mem, err := memory.New(16<<20, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	dev := &fuzzDev{}
	p, err := NewPCI(dev, mem, NewFakePlatform())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.barMapped(barIndex, 0xc0000000)
	run := func(ops []byte) {
		for len(ops) >= 2 {
			off, mode := uint64(ops[0]), ops[1]
			width := 1 << (mode & 3)
			data := ops[2 : 2+width]
			ops = ops[2+width:]
			switch int(mode>>2) & 3 {
			case opWrite:
				p.BARWrite(barIndex, commonOffset+off, data)
			case opKick:
				p.BARWrite(barIndex, notifyOffset+off*notifyMult, data)
			case opPoke:
				_ = mem.PutUint16(0x11002, binary.LittleEndian.Uint16(data))
			}
		}
	}
	run(fuzzInit())
	if dev.activations.Load() != 1 || p.snapshot().phase != phaseLive {
		t.Fatalf("initialisation: %d activations, phase %d", dev.activations.Load(), p.snapshot().phase)
	}
	run(append(fuzzOp(opPoke, 0, 2, 200), fuzzOp(opKick, 0, 2, 0)...))
	deadline := time.Now().Add(5 * time.Second)
	for !p.needsReset.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if !p.needsReset.Load() || p.Err() == nil {
		t.Fatal("a kicked broken ring did not set NEEDS_RESET")
	}
}
