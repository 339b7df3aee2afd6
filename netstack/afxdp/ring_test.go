package afxdp

import (
	"bytes"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/vnet"
)

// These tests run the datapath over rings in ordinary memory, with the
// test playing the kernel's side, so that hostile ring contents can be
// fed in without root or AF_XDP.

var fakeOff = unix.XDPRingOffset{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}

func fakeRingMem(size uint32, entry uintptr) []byte {
	words := make([]uint64, (int(fakeOff.Desc)+int(size)*int(entry))/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
}

// fakeKernel is the kernel's side of a Socket's rings.
type fakeKernel struct {
	s *Socket
	// cursors: what the kernel consumed or produced so far
	fillCons, rxProd, txCons, compProd uint32
}

// newFakeSocket returns a Socket with nFrames frames of 2048 bytes whose
// rings live in Go memory, and the kernel side of those rings. The
// Socket is in need-wakeup mode with no wake-up requested, so it makes no
// system calls.
func newFakeSocket(t *testing.T, nFrames uint32) (*Socket, *fakeKernel) {
	t.Helper()
	const frameSize = 2048
	half := nFrames / 2
	s := &Socket{
		frameSize: frameSize,
		nRx:       half,
		nTx:       half,
		umem:      make([]byte, frameSize*int(nFrames)),
		mode:      Mode{Attach: AttachGeneric, NeedWakeup: true},
	}
	fm, cm := fakeRingMem(half, addrSize), fakeRingMem(half, addrSize)
	rm, tm := fakeRingMem(half, descSize), fakeRingMem(half, descSize)
	s.fill = fillRing{prodRing{ringHeader: newRingHeader(fm, fakeOff, half)}, newAddrRing(fm, fakeOff, half)}
	s.comp = compRing{consRing{ringHeader: newRingHeader(cm, fakeOff, half)}, newAddrRing(cm, fakeOff, half)}
	s.rx = rxRing{consRing{ringHeader: newRingHeader(rm, fakeOff, half)}, newDescRing(rm, fakeOff, half)}
	s.tx = txRing{prodRing{ringHeader: newRingHeader(tm, fakeOff, half)}, newDescRing(tm, fakeOff, half)}
	s.initFrames()
	return s, &fakeKernel{s: s}
}

// takeFill consumes one fill ring entry, as the kernel does to receive.
func (k *fakeKernel) takeFill(t *testing.T) uint64 {
	t.Helper()
	f := &k.s.fill
	if atomic.LoadUint32(f.producer) == k.fillCons {
		t.Fatal("fill ring empty")
	}
	addr := f.addrs[k.fillCons&f.mask]
	k.fillCons++
	atomic.StoreUint32(f.consumer, k.fillCons)
	return addr
}

// receive writes frame at addr (plus off) and produces an RX descriptor.
func (k *fakeKernel) receive(addr uint64, frame []byte) {
	copy(k.s.umem[addr:], frame)
	k.rawRX(unix.XDPDesc{Addr: addr, Len: uint32(len(frame))})
}

// rawRX produces an arbitrary RX descriptor.
func (k *fakeKernel) rawRX(d unix.XDPDesc) {
	r := &k.s.rx
	r.descs[k.rxProd&r.mask] = d
	k.rxProd++
	atomic.StoreUint32(r.producer, k.rxProd)
}

// sendAll consumes every published TX descriptor and returns them.
func (k *fakeKernel) sendAll() []unix.XDPDesc {
	r := &k.s.tx
	var out []unix.XDPDesc
	for prod := atomic.LoadUint32(r.producer); k.txCons != prod; k.txCons++ {
		out = append(out, r.descs[k.txCons&r.mask])
	}
	atomic.StoreUint32(r.consumer, k.txCons)
	return out
}

// complete produces completion entries.
func (k *fakeKernel) complete(addrs ...uint64) {
	r := &k.s.comp
	for _, a := range addrs {
		r.addrs[k.compProd&r.mask] = a
		k.compProd++
	}
	atomic.StoreUint32(r.producer, k.compProd)
}

func collect(s *Socket, max int) [][]byte {
	var got [][]byte
	s.Transmit(max, func(f []byte, _ vnet.Offload) { got = append(got, bytes.Clone(f)) })
	return got
}

func TestFakeRingsRoundTrip(t *testing.T) {
	s, k := newFakeSocket(t, 16)
	// Every receive frame starts on the fill ring.
	if got := atomic.LoadUint32(s.fill.producer); got != s.nRx {
		t.Fatalf("fill producer = %d, want %d", got, s.nRx)
	}
	if s.Arm() {
		t.Fatal("Arm reports frames on an empty RX ring")
	}
	for round := range 5 { // more rounds than frames: recycling must work
		var want [][]byte
		for i := range s.nRx {
			addr := k.takeFill(t)
			f := bytes.Repeat([]byte{byte(round), byte(i)}, 30+int(i))
			// Like the kernel in copy mode, put data after a headroom.
			k.receive(addr+256, f)
			want = append(want, f)
		}
		if !s.Arm() {
			t.Fatal("Arm misses frames on the RX ring")
		}
		got := collect(s, 3)
		got = append(got, collect(s, 100)...)
		if len(got) != len(want) {
			t.Fatalf("round %d: got %d frames, want %d", round, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("round %d frame %d: got %x, want %x", round, i, got[i], want[i])
			}
		}
	}
	st := s.Stats()
	if st.RxPackets != 5*uint64(s.nRx) || st.RxInvalidDescs != 0 {
		t.Fatalf("stats %+v", st)
	}

	// Send side: every frame goes out and comes back.
	for round := range 3 {
		for i := range s.nTx {
			f := make([]byte, 60)
			binary.BigEndian.PutUint32(f, uint32(round)<<16|uint32(i))
			if !s.Deliver(f) {
				t.Fatalf("round %d: Deliver %d refused", round, i)
			}
		}
		if s.Deliver(make([]byte, 60)) {
			t.Fatal("Deliver accepted a frame with every send frame in flight")
		}
		if n := len(k.sendAll()); n != 0 {
			t.Fatalf("kernel saw %d frames before Flush", n)
		}
		s.Flush()
		sent := k.sendAll()
		if len(sent) != int(s.nTx) {
			t.Fatalf("kernel saw %d frames, want %d", len(sent), s.nTx)
		}
		for i, d := range sent {
			f := s.umem[d.Addr : d.Addr+uint64(d.Len)]
			if len(f) != 60 || binary.BigEndian.Uint32(f) != uint32(round)<<16|uint32(i) {
				t.Fatalf("frame %d on the TX ring: %x", i, f)
			}
			k.complete(d.Addr)
		}
		s.Flush()
		if len(s.txFree) != int(s.nTx) {
			t.Fatalf("%d free send frames after completion, want %d", len(s.txFree), s.nTx)
		}
	}
	st = s.Stats()
	if st.TxPackets != 3*uint64(s.nTx) || st.TxCompleted != st.TxPackets || st.TxDropNoFrame != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFakeRingsHostileRX(t *testing.T) {
	s, k := newFakeSocket(t, 32)
	fs := s.frameSize
	a := k.takeFill(t)
	b := k.takeFill(t)
	c := k.takeFill(t)
	bad := []unix.XDPDesc{
		{Addr: uint64(len(s.umem)) + 100, Len: 60},      // outside the UMEM
		{Addr: ^uint64(0) - 10, Len: 60},                // wraps around
		{Addr: uint64(s.nRx) * fs, Len: 60},             // a send frame
		{Addr: 5 * fs, Len: 60},                         // still on the fill ring
		{Addr: a + fs - 10, Len: 60},                    // crosses into the next frame
		{Addr: b, Len: 0},                               // empty
		{Addr: c, Len: 60, Options: unix.XDP_PKT_CONTD}, // fragment: not asked for
		{Addr: c, Len: 60},                              // c again: already colibri's
	}
	for _, d := range bad {
		k.rawRX(d)
	}
	good := k.takeFill(t)
	k.receive(good, []byte("a good frame, after the bad ones"))
	got := collect(s, 64)
	if len(got) != 1 || string(got[0]) != "a good frame, after the bad ones" {
		t.Fatalf("got %q", got)
	}
	st := s.Stats()
	if st.RxInvalidDescs != uint64(len(bad)) || st.RxPackets != 1 {
		t.Fatalf("stats: invalid %d, packets %d", st.RxInvalidDescs, st.RxPackets)
	}
	// Frames a, b and c were taken back despite their bad descriptors:
	// every receive frame is on the fill ring again, each once.
	checkFillRing(t, s, k, true)

	// An impossible producer index is counted and clamped.
	atomic.StoreUint32(s.rx.producer, k.rxProd+1000)
	s.Transmit(1000, func([]byte, vnet.Offload) {})
	if s.Stats().RxBadIndex == 0 {
		t.Fatal("impossible RX producer index not counted")
	}
}

func TestFakeRingsHostileCompletion(t *testing.T) {
	s, k := newFakeSocket(t, 16)
	if !s.Deliver(make([]byte, 64)) {
		t.Fatal("Deliver refused")
	}
	s.Flush()
	sent := k.sendAll()
	k.complete(
		0,                           // a receive frame
		uint64(len(s.umem)),         // outside the UMEM
		^uint64(0),                  // far outside
		sent[0].Addr+1,              // not a frame start
		uint64(s.nRx+1)*s.frameSize, // a send frame not in flight
		sent[0].Addr,                // the real one
		sent[0].Addr,                // the real one twice
	)
	s.Flush()
	st := s.Stats()
	if st.CompInvalidDescs != 6 || st.TxCompleted != 1 {
		t.Fatalf("stats: invalid %d, completed %d", st.CompInvalidDescs, st.TxCompleted)
	}
	if len(s.txFree) != int(s.nTx) {
		t.Fatalf("%d free send frames, want %d", len(s.txFree), s.nTx)
	}

	// A TX consumer index ahead of the producer: no room, counted.
	atomic.StoreUint32(s.tx.consumer, k.txCons+100)
	for range s.nTx + 1 {
		s.Deliver(make([]byte, 64))
	}
	st = s.Stats()
	if st.TxBadIndex == 0 || st.TxDropRingFull == 0 {
		t.Fatalf("impossible TX consumer index: bad %d, ring full %d", st.TxBadIndex, st.TxDropRingFull)
	}
}

func TestFakeDeliverLimits(t *testing.T) {
	s, _ := newFakeSocket(t, 16)
	if s.Deliver(make([]byte, 13)) {
		t.Error("Deliver accepted a runt")
	}
	if s.Deliver(make([]byte, s.frameSize+1)) {
		t.Error("Deliver accepted a frame larger than a UMEM frame")
	}
	if !s.Deliver(make([]byte, s.frameSize)) {
		t.Error("Deliver refused a frame of exactly one UMEM frame")
	}
	st := s.Stats()
	if st.TxDropRunt != 1 || st.TxDropTooBig != 1 || st.TxPackets != 1 {
		t.Errorf("stats %+v", st)
	}
}

// FuzzRXDescriptors feeds arbitrary RX and completion entries to a Socket:
// it must never panic, never hand out memory outside a receive frame and
// never put a frame on the fill ring twice.
func FuzzRXDescriptors(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 60, 0, 0, 0, 0, 0, 0, 0})
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, k := newFakeSocket(t, 16)
		for len(data) >= 16 {
			d := unix.XDPDesc{
				Addr:    binary.LittleEndian.Uint64(data) % (2 * uint64(len(s.umem))),
				Len:     binary.LittleEndian.Uint32(data[8:]) % 4096,
				Options: binary.LittleEndian.Uint32(data[12:]) % 2,
			}
			data = data[16:]
			k.rawRX(d)
			k.complete(d.Addr)
			s.Transmit(4, func(frame []byte, _ vnet.Offload) {
				if len(frame) == 0 || len(frame) > int(s.frameSize) {
					t.Fatalf("frame of %d bytes", len(frame))
				}
			})
			s.Flush()
		}
		s.Transmit(64, func([]byte, vnet.Offload) {})
		checkFillRing(t, s, k, false)
	})
}

// checkFillRing checks that no frame is on the fill ring twice and, if
// all is set, that every receive frame is there.
func checkFillRing(t *testing.T, s *Socket, k *fakeKernel, all bool) {
	t.Helper()
	seen := map[uint64]bool{}
	prod := atomic.LoadUint32(s.fill.producer)
	for i := k.fillCons; i != prod; i++ {
		addr := s.fill.addrs[i&s.fill.mask]
		if seen[addr] {
			t.Fatalf("frame %#x on the fill ring twice", addr)
		}
		seen[addr] = true
	}
	if all && len(seen) != int(s.nRx) {
		t.Fatalf("%d frames on the fill ring, want %d", len(seen), s.nRx)
	}
}
