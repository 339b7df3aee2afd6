package netdev_test

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"
	"github.com/colibrivm/colibri/vmm/virtio/netdev/netdevtest"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"

	"github.com/colibrivm/colibri/internal/vnet"
)

var mac = [6]byte{0x52, 0x54, 0, 0, 0, 1}

func newMemory(t testing.TB, size uint64) *memory.Memory {
	t.Helper()
	m, err := memory.New(size, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newDriver(t testing.TB, bufSize int) *netdevtest.Driver {
	t.Helper()
	mem := newMemory(t, 16<<20+netdevtest.Footprint(bufSize))
	d, err := netdevtest.New(mem, 0x10000, bufSize, mac)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func frame(n int, seed byte) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = seed + byte(i*7)
	}
	return f
}

func TestTransmitReceive(t *testing.T) {
	d := newDriver(t, 2048)
	want := [][]byte{frame(60, 1), frame(1514, 2), frame(14, 3)}
	if n := d.Send(want...); n != 3 {
		t.Fatalf("queued %d frames, want 3", n)
	}
	var got [][]byte
	if n := d.Pair.Transmit(64, func(f []byte, _ vnet.Offload) { got = append(got, bytes.Clone(f)) }); n != 3 {
		t.Fatalf("Transmit handed over %d frames, want 3", n)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("frame %d: transmitted %d bytes differ from the %d sent", i, len(got[i]), len(want[i]))
		}
	}
	if d.TxInterrupts.Load() != 0 {
		t.Error("transmit completion interrupt before CompleteTx")
	}
	d.Pair.CompleteTx()
	if d.TxInterrupts.Load() == 0 {
		t.Error("no transmit completion interrupt")
	}
	for _, f := range want {
		if !d.Pair.Deliver(f) {
			t.Fatal("Deliver found no receive buffer")
		}
	}
	d.Pair.Flush()
	if d.RxInterrupts.Load() != 1 {
		t.Errorf("%d receive interrupts for one flush, want 1", d.RxInterrupts.Load())
	}
	got = nil
	d.Receive(func(f []byte) { got = append(got, bytes.Clone(f)) })
	if len(got) != len(want) {
		t.Fatalf("received %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("frame %d: received bytes differ", i)
		}
	}
}

func TestMergeableBuffers(t *testing.T) {
	d := newDriver(t, 100) // 88 bytes of frame in the first buffer
	f := frame(1514, 9)
	if !d.Pair.Deliver(f) {
		t.Fatal("Deliver refused a frame that fits in 16 merged buffers")
	}
	d.Pair.Flush()
	var got []byte
	if n := d.Receive(func(b []byte) { got = bytes.Clone(b) }); n != 1 {
		t.Fatalf("received %d frames, want 1", n)
	}
	if !bytes.Equal(got, f) {
		t.Fatalf("merged frame of %d bytes differs from the %d delivered", len(got), len(f))
	}
}

func TestReceiveRingFull(t *testing.T) {
	d := newDriver(t, 2048)
	f := frame(64, 4)
	n := 0
	for d.Pair.Deliver(f) {
		n++
		if n > netdevtest.QueueSize {
			t.Fatal("Deliver kept accepting frames past the ring size")
		}
	}
	if n != netdevtest.QueueSize {
		t.Fatalf("delivered %d frames into %d buffers", n, netdevtest.QueueSize)
	}
	// A frame needing more buffers than are left is refused whole: the
	// buffers it tried go back to the ring.
	d2 := newDriver(t, 100)
	for i := 0; i < netdevtest.QueueSize-2; i++ {
		if !d2.Pair.Deliver(frame(20, 1)) {
			t.Fatalf("frame %d refused", i)
		}
	}
	if d2.Pair.Deliver(frame(1000, 1)) {
		t.Fatal("a frame needing 11 buffers was taken with 2 left")
	}
	if !d2.Pair.Deliver(frame(150, 1)) {
		t.Fatal("the 2 buffers left were lost by the refused frame")
	}
}

func TestKickSuppression(t *testing.T) {
	d := newDriver(t, 2048)
	d.Send(frame(60, 1))
	if d.Kicks.Load() != 1 {
		t.Fatalf("%d kicks for the first frame with notifications armed, want 1", d.Kicks.Load())
	}
	d.Pair.Disarm()
	d.Pair.Transmit(64, func([]byte, vnet.Offload) {})
	for i := 0; i < 1000; i++ {
		d.Send(frame(60, byte(i)))
		d.Pair.Transmit(64, func([]byte, vnet.Offload) {})
	}
	if d.Kicks.Load() != 1 {
		t.Fatalf("%d kicks while the poller polls, want none after the first", d.Kicks.Load()-1)
	}
	if d.Pair.Arm() {
		t.Fatal("Arm reported pending frames on an empty ring")
	}
	d.Send(frame(60, 2))
	if d.Kicks.Load() != 2 {
		t.Fatalf("no kick after Arm")
	}
	d.Pair.Disarm()
	d.Send(frame(60, 3))
	if !d.Pair.Arm() {
		t.Fatal("Arm missed frames sent while disarmed")
	}
}

func TestMalformedTransmit(t *testing.T) {
	seg := func(n int, w bool) virtq.Seg { return virtq.Seg{Buf: make([]byte, n), Write: w} }
	chain := func(segs ...virtq.Seg) *virtq.Chain {
		c := &virtq.Chain{Segs: segs}
		for _, s := range segs {
			if s.Write {
				c.WriteLen += uint32(len(s.Buf))
			} else {
				c.ReadLen += uint32(len(s.Buf))
			}
		}
		return c
	}
	scratch := make([]byte, netdev.MaxFrame)
	for name, c := range map[string]*virtq.Chain{
		"empty":          chain(),
		"header only":    chain(seg(12, false)),
		"short header":   chain(seg(8, false)),
		"runt":           chain(seg(12, false), seg(13, false)),
		"writable":       chain(seg(12, false), seg(60, false), seg(4, true)),
		"too large":      chain(seg(12, false), seg(netdev.MaxFrame+1, false)),
		"header and two": chain(seg(5, false), seg(7, false)), // 12 bytes, no frame
	} {
		if f, _, err := netdev.ParseTx(c, scratch, true, true); err == nil {
			t.Errorf("%s: parsed a %d-byte frame from a malformed chain", name, len(f))
		}
	}
	// Offload requests: refused when not negotiated or not fitting.
	withHeader := func(h [netdev.HeaderLen]byte, frameLen int) *virtq.Chain {
		c := chain(seg(netdev.HeaderLen, false), seg(frameLen, false))
		copy(c.Segs[0].Buf, h[:])
		return c
	}
	var tso, csumOut, ufo [netdev.HeaderLen]byte
	tso[0], tso[1], tso[4], tso[6], tso[8] = 1, vnet.GSOTCPv4, 100, 34, 16
	csumOut[0], csumOut[6], csumOut[8] = 1, 50, 16 // 50+16+2 > 60
	ufo[1], ufo[4] = 3, 100
	for _, tc := range []struct {
		name      string
		hdr       [netdev.HeaderLen]byte
		csum, gso bool
	}{
		{"TSO without HOST_TSO", tso, true, false},
		{"checksum beyond the frame", csumOut, true, true},
		{"UDP fragmentation", ufo, true, true},
	} {
		if _, _, err := netdev.ParseTx(withHeader(tc.hdr, 60), scratch, tc.csum, tc.gso); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, off, err := netdev.ParseTx(withHeader(tso, 60), scratch, false, false); err != nil || off.Pending() {
		t.Errorf("a driver without checksum offload: header flags must be ignored, got %+v, %v", off, err)
	}
	// A header split over buffers (offload fields included) and a frame
	// over three.
	c := chain(seg(5, false), seg(10, false), seg(20, false), seg(30, false))
	copy(c.Segs[0].Buf, tso[:5])
	copy(c.Segs[1].Buf, tso[5:])
	for i := 7; i < len(c.Segs[1].Buf); i++ {
		c.Segs[1].Buf[i] = byte(i)
	}
	f, off, err := netdev.ParseTx(c, scratch, true, true)
	if err != nil || len(f) != 53 || f[0] != 7 {
		t.Fatalf("split chain: %d bytes starting %v, err %v; want 53 starting with byte 7", len(f), f[:1], err)
	}
	if want := (vnet.Offload{NeedsCsum: true, CsumStart: 34, CsumOffset: 16, GSOType: vnet.GSOTCPv4, GSOSize: 100}); off != want {
		t.Fatalf("split header: offload %+v, want %+v", off, want)
	}
}

// TestTransmitFrameIsPrivate: the frame ParseTx returns is the device's
// own copy, also when it lies in one guest buffer. The switch checks its
// source address and then delivers it: had the frame aliased guest
// memory, the guest could rewrite the address in between (its other vCPU
// does it while the poller works) and a neighbour would receive a frame
// from an address the port is not bound to. Found by internal/hostile's
// tx-toctou: in-process, 395 of 13,631 frames reached the neighbour
// with the forged source before this fix.
func TestTransmitFrameIsPrivate(t *testing.T) {
	scratch := make([]byte, netdev.MaxFrame)
	for _, split := range []bool{false, true} {
		var c virtq.Chain
		if split { // the frame in its own buffer after the header
			c.Segs = []virtq.Seg{{Buf: make([]byte, netdev.HeaderLen)}, {Buf: make([]byte, 60)}}
		} else { // header and frame in one buffer, as Linux sends them
			c.Segs = []virtq.Seg{{Buf: make([]byte, netdev.HeaderLen+60)}}
		}
		c.ReadLen = netdev.HeaderLen + 60
		guest := c.Segs[len(c.Segs)-1].Buf
		guest = guest[len(guest)-60:]
		copy(guest[6:12], []byte{0x52, 0x54, 0, 0, 0, 0xa})
		f, _, err := netdev.ParseTx(&c, scratch, false, false)
		if err != nil {
			t.Fatal(err)
		}
		copy(guest[6:12], []byte{2, 0x66, 0x66, 0x66, 0x66, 0x66}) // the guest, after the check
		if f[6] != 0x52 || f[11] != 0xa {
			t.Errorf("split %v: the frame changed with the guest's buffer: source %x", split, f[6:12])
		}
	}
}

// TestControlQueue: the driver's VQ_PAIRS_SET moves the pollers to that
// many pairs, and out-of-range values are refused.
func TestControlQueue(t *testing.T) {
	mem := newMemory(t, 16<<20)
	var attached [][]*netdev.QueuePair
	dev, err := netdev.New(netdev.Config{MAC: mac, Pairs: 4, Attach: func(p []*netdev.QueuePair) { attached = append(attached, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if dev.Features()&netdev.FeatureMQ == 0 || len(dev.QueueSizes()) != 9 {
		t.Fatalf("4 pairs: features %#x, %d queues; want MQ and 9 queues", dev.Features(), len(dev.QueueSizes()))
	}
	queues := make([]*virtio.Queue, 9)
	for i := range queues {
		base := uint64(0x10000 * (i + 1))
		vq, err := virtq.New(mem, virtq.Config{Size: 64, DescAddr: base, AvailAddr: base + 0x1000, UsedAddr: base + 0x2000})
		if err != nil {
			t.Fatal(err)
		}
		queues[i] = virtio.NewQueue(vq, i, func() {}, func(err error) { t.Errorf("queue broken: %v", err) })
	}
	if err := dev.Activate(virtio.FeatureVersion1|netdev.FeatureMQ|netdev.FeatureCtrlVQ, queues); err != nil {
		t.Fatal(err)
	}
	if len(attached) != 1 || len(attached[0]) != 1 {
		t.Fatalf("after activation attached %v, want one set of one pair", attached)
	}
	ctrl := uint64(0x90000)
	send := func(pairs uint16) byte {
		cmd := []byte{4, 0, byte(pairs), byte(pairs >> 8)}
		mem.Write(0x200000, cmd)
		mem.Write(0x200010, []byte{0xee})
		desc := make([]byte, 32)
		binary.LittleEndian.PutUint64(desc[0:], 0x200000)
		binary.LittleEndian.PutUint32(desc[8:], 4)
		binary.LittleEndian.PutUint16(desc[12:], 1)
		binary.LittleEndian.PutUint16(desc[14:], 1)
		binary.LittleEndian.PutUint64(desc[16:], 0x200010)
		binary.LittleEndian.PutUint32(desc[24:], 1)
		binary.LittleEndian.PutUint16(desc[28:], 2)
		mem.Write(ctrl, desc)
		idx, _ := mem.Uint16(ctrl + 0x1000 + 2)
		mem.PutUint16(ctrl+0x1000+4+2*uint64(idx%64), 0)
		mem.PutUint16(ctrl+0x1000+2, idx+1)
		dev.Process(queues[8])
		ack := []byte{0}
		mem.Read(0x200010, ack)
		return ack[0]
	}
	if ack := send(3); ack != 0 || dev.ActivePairs() != 3 || len(attached[len(attached)-1]) != 3 {
		t.Fatalf("VQ_PAIRS_SET 3: ack %d, %d active; want ack 0 and 3 pairs attached", ack, dev.ActivePairs())
	}
	for _, bad := range []uint16{0, 5, 0xffff} {
		if ack := send(bad); ack != 1 {
			t.Errorf("VQ_PAIRS_SET %d: ack %d, want 1 (error)", bad, ack)
		}
	}
	if dev.ActivePairs() != 3 {
		t.Fatalf("refused commands changed the pairs to %d", dev.ActivePairs())
	}
	dev.Reset()
	if last := attached[len(attached)-1]; last != nil {
		t.Fatalf("reset attached %d pairs, want nil", len(last))
	}
}

func TestConfig(t *testing.T) {
	dev, err := netdev.New(netdev.Config{MAC: mac, Pairs: 2})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10)
	dev.ReadConfig(0, b)
	if !bytes.Equal(b[:6], mac[:]) || binary.LittleEndian.Uint16(b[6:]) != 1 || binary.LittleEndian.Uint16(b[8:]) != 2 {
		t.Fatalf("config space % x: want mac, link up, 2 pairs", b)
	}
	for _, bad := range []netdev.Config{{MAC: mac, Pairs: 0}, {MAC: mac, Pairs: 257}, {MAC: [6]byte{1, 0, 0, 0, 0, 1}, Pairs: 1}} {
		if _, err := netdev.New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}

// TestOffloadNegotiation: a driver that negotiated checksum and TSO
// offloads takes frames with them pending, and the receive header
// describes them; a driver without them takes only complete frames.
func TestOffloadNegotiation(t *testing.T) {
	tso := vnet.Offload{NeedsCsum: true, CsumStart: 34, CsumOffset: 16, GSOType: vnet.GSOTCPv4, GSOSize: 1448, HdrLen: 66}
	tso6 := tso
	tso6.GSOType = vnet.GSOTCPv6
	csum := vnet.Offload{NeedsCsum: true, CsumStart: 34, CsumOffset: 6}

	plain := newDriver(t, 2048)
	for _, off := range []vnet.Offload{tso, csum} {
		if plain.Pair.AcceptsOffload(off) {
			t.Errorf("a driver without offloads accepts %+v", off)
		}
	}
	if !plain.Pair.AcceptsOffload(vnet.Offload{}) {
		t.Error("a driver without offloads refuses a complete frame")
	}

	mem := newMemory(t, 16<<20+netdevtest.Footprint(2048))
	d, err := netdevtest.NewWithFeatures(mem, 0x10000, 2048, mac,
		netdevtest.DefaultFeatures|netdev.FeatureCsum|netdev.FeatureGuestCsum|netdev.FeatureGuestTSO4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if !d.Pair.AcceptsOffload(tso) || !d.Pair.AcceptsOffload(csum) {
		t.Fatal("a driver with GUEST_CSUM and GUEST_TSO4 refuses TSO or checksum offload")
	}
	if d.Pair.AcceptsOffload(tso6) {
		t.Fatal("a driver without GUEST_TSO6 accepts an IPv6 TSO frame")
	}
	f := frame(20000, 3) // a TSO frame over ten merged buffers
	if !d.Pair.DeliverOffload(f, tso) {
		t.Fatal("DeliverOffload found no room")
	}
	d.Pair.Flush()
	var hdr, got []byte
	d.ReceiveWithHeader(func(h, b []byte) { hdr, got = bytes.Clone(h), bytes.Clone(b) })
	if !bytes.Equal(got, f) {
		t.Fatalf("received %d bytes, want the %d delivered", len(got), len(f))
	}
	back, err := vnet.ParseHeader(hdr, true, true)
	if err != nil || back != tso {
		t.Fatalf("receive header says %+v (%v), want %+v", back, err, tso)
	}
	if n := binary.LittleEndian.Uint16(hdr[10:]); n != 10 {
		t.Errorf("num_buffers %d, want 10", n)
	}
}

// TestMergeablePublishedWhole: a frame spread over several receive
// buffers becomes visible to the driver all at once. A driver that reads
// used.idx while the device delivers must never see it inside a frame
// (fewer buffers than num_buffers says), which it would treat as a
// broken frame.
func TestMergeablePublishedWhole(t *testing.T) {
	const bufSize = netdev.HeaderLen + 20 // 10 buffers per frame below
	const perFrame = 10
	mem := newMemory(t, 16<<20+netdevtest.Footprint(bufSize))
	d, err := netdevtest.New(mem, 0x10000, bufSize, mac)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	usedIdx, err := mem.Slice(0x10000+0x2000+2, 2) // the receive ring's used.idx
	if err != nil {
		t.Fatal(err)
	}
	f := frame(perFrame*bufSize-netdev.HeaderLen, 5)
	const frames = 3000
	done := make(chan int)
	go func() {
		delivered := 0
		for delivered < frames {
			if d.Pair.Deliver(f) {
				delivered++
				continue
			}
			d.Pair.Flush()
			runtime.Gosched()
		}
		d.Pair.Flush()
		done <- delivered
	}()
	torn, seen := 0, 0
	var got []byte
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		if idx := memory.LoadUint16(usedIdx); idx%perFrame != 0 {
			torn++
		}
		seen += d.Receive(func(b []byte) { got = b })
	}
	seen += d.Receive(func(b []byte) { got = b })
	if torn > 0 {
		t.Errorf("the driver saw used.idx inside a frame %d times", torn)
	}
	if seen != frames || !bytes.Equal(got, f) {
		t.Errorf("received %d frames (last %d bytes), want %d of %d bytes", seen, len(got), frames, len(f))
	}
}

// TestRxFullArmRx: a frame refused for want of receive buffers says so
// (RxFull), one refused for another reason does not; ArmRx makes the
// driver kick its receive queue when it posts buffers beyond those it had,
// and not otherwise.
func TestRxFullArmRx(t *testing.T) {
	d := newDriver(t, 2048)
	f := frame(64, 4)
	for d.Pair.Deliver(f) {
	}
	if !d.Pair.RxFull() {
		t.Fatal("a frame refused by a full ring is not RxFull")
	}
	if d.Pair.Deliver(frame(netdev.MaxFrame+1, 1)) || d.Pair.RxFull() {
		t.Fatal("an oversized frame is refused as RxFull (it would never fit)")
	}
	if d.Pair.Deliver(f) || !d.Pair.RxFull() {
		t.Fatal("the full ring's refusal is not RxFull")
	}
	d.Pair.Flush()
	if d.Pair.RxWaitFD() < 0 {
		t.Fatal("no receive wait fd")
	}
	if d.Pair.ArmRx() {
		t.Fatal("ArmRx reports buffers the driver has not posted")
	}
	if n := d.Receive(func([]byte) {}); n != netdevtest.QueueSize {
		t.Fatalf("driver took back %d frames, want %d", n, netdevtest.QueueSize)
	}
	if d.RxKicks.Load() != 1 {
		t.Fatalf("%d receive kicks after reposting with ArmRx, want 1", d.RxKicks.Load())
	}
	d.Pair.DisarmRx()
	for i := 0; i < 10; i++ {
		if !d.Pair.Deliver(f) {
			t.Fatal("refused with buffers posted")
		}
	}
	d.Pair.Flush()
	d.Receive(func([]byte) {})
	if d.RxKicks.Load() != 1 {
		t.Fatalf("%d receive kicks with DisarmRx, want still 1", d.RxKicks.Load())
	}
	// Buffers posted between the refusal and ArmRx: ArmRx says to retry.
	for d.Pair.Deliver(f) {
	}
	d.Pair.Flush()
	d.Receive(func([]byte) {})
	if !d.Pair.ArmRx() {
		t.Fatal("ArmRx missed buffers posted after the refusal")
	}
	d.Pair.DisarmRx()
}

// TestTransmitBoundedAgainstReusedHeads: a driver that offers the same
// malformed chain again and again, as fast as the device consumes it,
// cannot keep Transmit (and the poller) from returning: one call pops at
// most a ring's worth of chains.
func TestTransmitBoundedAgainstReusedHeads(t *testing.T) {
	const size = 16
	mem := newMemory(t, 16<<20)
	desc := make([]byte, 16)
	binary.LittleEndian.PutUint64(desc, 0x100000)
	binary.LittleEndian.PutUint32(desc[8:], 64)
	binary.LittleEndian.PutUint16(desc[12:], 2) // writable: a malformed transmit chain
	mem.Write(0x4000, desc)
	rxq, _ := virtq.New(mem, virtq.Config{Size: size, DescAddr: 0x1000, AvailAddr: 0x2000, UsedAddr: 0x3000, EventIdx: true})
	txq, _ := virtq.New(mem, virtq.Config{Size: size, DescAddr: 0x4000, AvailAddr: 0x5000, UsedAddr: 0x6000, EventIdx: true})
	var pairs []*netdev.QueuePair
	dev, _ := netdev.New(netdev.Config{MAC: mac, Pairs: 1, Attach: func(p []*netdev.QueuePair) { pairs = p }})
	queues := []*virtio.Queue{
		virtio.NewQueue(rxq, 0, func() {}, func(error) {}),
		virtio.NewQueue(txq, 1, func() {}, func(error) {}),
		nil,
	}
	if err := dev.Activate(virtio.FeatureVersion1|virtio.FeatureEventIdx|netdev.FeatureMrgRxBuf, queues); err != nil {
		t.Fatal(err)
	}
	availIdx, _ := mem.Slice(0x5000+2, 2)
	usedIdx, _ := mem.Slice(0x6000+2, 2)
	stop, stopped := make(chan struct{}), make(chan struct{})
	defer func() { close(stop); <-stopped }()
	go func() {
		defer close(stopped)
		// Keep a ring's worth offered past what the device returned.
		for {
			select {
			case <-stop:
				return
			default:
			}
			memory.StoreUint16(availIdx, memory.LoadUint16(usedIdx)+size)
		}
	}()
	time.Sleep(time.Millisecond)
	for i := 0; i < 20; i++ {
		before := dev.Stats.TxMalformed.Load()
		done := make(chan int)
		go func() { done <- pairs[0].Transmit(64, func([]byte, vnet.Offload) {}) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Transmit still running after 5 s of reused heads")
		}
		if n := dev.Stats.TxMalformed.Load() - before; n > size {
			t.Fatalf("call %d: one Transmit popped %d malformed chains from a ring of %d", i, n, size)
		}
	}
}
