package netstack_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/vnet"
	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/netstack/netstacktest"
)

// ringEP is an endpoint that behaves like a virtio queue pair: its ring
// positions are plain fields, not safe for concurrent use, exactly what
// the Endpoint contract promises an implementation may assume. Two
// pollers inside Transmit pop the same frame twice (counted as a
// duplicate) and race (the race detector reports it); guards count any
// overlap of Transmit/Arm/Disarm, or of Deliver/Flush.
type ringEP struct {
	id    int
	fd    int
	tx    [][]byte // made available before the test starts
	next  int      // the device's position in tx (plain, like lastAvail)
	pops  int      // chains popped (plain)
	armed atomic.Bool

	pending [][]byte // delivered, not yet flushed (plain, like used entries)
	got     [][]byte // flushed (plain, like used.idx)
	used    int      // used entries published

	inTx, inRx atomic.Int32
	overlaps   atomic.Uint64
	calls      atomic.Uint64 // every method call
}

func newRingEP(t *testing.T, id, frames int, dst [6]byte) *ringEP {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	e := &ringEP{id: id, fd: fd}
	src := [6]byte{0x52, 0x54, 0, 0, 1, byte(id)}
	for i := range frames {
		f := netstacktest.Frame(dst, src, 128)
		binary.BigEndian.PutUint16(f[34:36], uint16(i)) // spread the flows
		binary.BigEndian.PutUint32(f[42:46], uint32(id))
		binary.BigEndian.PutUint32(f[46:50], uint32(i))
		e.tx = append(e.tx, f)
	}
	return e
}

func (e *ringEP) enter(g *atomic.Int32) {
	e.calls.Add(1)
	if !g.CompareAndSwap(0, 1) {
		e.overlaps.Add(1)
	}
}

func (e *ringEP) leave(g *atomic.Int32) { g.Store(0) }

func (e *ringEP) Transmit(max int, fn func([]byte, vnet.Offload)) int {
	e.enter(&e.inTx)
	defer e.leave(&e.inTx)
	n := 0
	for n < max && e.next < len(e.tx) {
		f := e.tx[e.next]
		e.next++
		e.pops++
		fn(f, vnet.Offload{})
		n++
	}
	return n
}

func (e *ringEP) Deliver(f []byte) bool {
	e.enter(&e.inRx)
	defer e.leave(&e.inRx)
	e.pending = append(e.pending, append([]byte(nil), f...))
	return true
}

func (e *ringEP) Flush() {
	e.enter(&e.inRx)
	defer e.leave(&e.inRx)
	e.got = append(e.got, e.pending...)
	e.used += len(e.pending)
	e.pending = e.pending[:0]
}

func (e *ringEP) WaitFD() int { return e.fd }

func (e *ringEP) Arm() bool {
	e.enter(&e.inTx)
	defer e.leave(&e.inTx)
	e.armed.Store(true)
	return e.next < len(e.tx)
}

func (e *ringEP) Disarm() {
	e.enter(&e.inTx)
	defer e.leave(&e.inTx)
	e.armed.Store(false)
}

// swapScenario is one switch with a guest port, whose endpoints a test
// keeps replacing, and a peer port exchanging traffic with it.
type swapScenario struct {
	t     *testing.T
	sw    *netstack.Switch
	guest *netstack.Port
	peer  *netstacktest.Queue
	eps   []*ringEP
	macG  [6]byte
}

const swapPerEP = 20000

func newSwapScenario(t *testing.T, name string, n byte) *swapScenario {
	sc := &swapScenario{t: t, sw: netstack.NewSwitch(name), macG: [6]byte{0x52, 0x54, 0, 0, 1, n}}
	sc.guest, _ = sc.sw.AddPort("guest")
	peerPort, _ := sc.sw.AddPort("peer")
	sc.peer = newQueue(t, 0)
	_ = peerPort.SetEndpoints([]netstack.Endpoint{sc.peer})
	_ = sc.sw.Learn(macX[:], peerPort)
	_ = sc.sw.Learn(sc.macG[:], sc.guest)
	for i := range 4 {
		sc.eps = append(sc.eps, newRingEP(t, i, swapPerEP, macX))
	}
	return sc
}

func (sc *swapScenario) set(idx ...int) []netstack.Endpoint {
	s := make([]netstack.Endpoint, len(idx))
	for i, k := range idx {
		s[i] = sc.eps[k]
	}
	return s
}

// run swaps the guest's endpoints rounds times while the peer sends to
// the guest, then attaches all four until every guest frame is out.
func (sc *swapScenario) run(rounds int) error {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the peer sends to the guest continuously, many flows
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			if sc.peer.Pending() > 512 {
				time.Sleep(10 * time.Microsecond)
				continue
			}
			f := netstacktest.Frame(sc.macG, macX, 96)
			binary.BigEndian.PutUint16(f[34:36], uint16(i))
			sc.peer.Inject(f)
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	sets := [][]int{{0}, {0, 1}, {0, 1, 2, 3}, {0, 2}, {0, 3, 1}, {0}, {0, 1, 2}}
	for i := range rounds {
		if err := sc.guest.SetEndpoints(sc.set(sets[i%len(sets)]...)); err != nil {
			return err
		}
		time.Sleep(time.Duration(i%5) * 20 * time.Microsecond)
	}
	return sc.guest.SetEndpoints(sc.set(0, 1, 2, 3))
}

// check waits for every guest frame at the peer, detaches the guest and
// verifies that nothing was served twice.
func (sc *swapScenario) check() {
	t := sc.t
	seen := map[[2]uint32]int{}
	var got int
	take := func() {
		for _, f := range sc.peer.Take() {
			if f[0] != macX[0] || f[5] != macX[5] {
				continue // the peer's own flooded frames do not come back
			}
			seen[[2]uint32{binary.BigEndian.Uint32(f[42:46]), binary.BigEndian.Uint32(f[46:50])}]++
			got++
		}
	}
	waitFor(t, "every guest frame at the peer", func() bool { take(); return got >= 4*swapPerEP })
	time.Sleep(10 * time.Millisecond) // let any duplicate arrive
	if err := sc.guest.SetEndpoints(nil); err != nil {
		t.Fatal(err)
	}
	take()
	// The pollers have let go of the endpoints: their plain fields are
	// safe to read.
	dups := 0
	for k, n := range seen {
		if n != 1 {
			if dups++; dups < 5 {
				t.Errorf("%s: guest frame %v reached the peer %d times", sc.sw.Name(), k, n)
			}
		}
	}
	var delivered, used int
	for _, e := range sc.eps {
		if n := e.overlaps.Load(); n != 0 {
			t.Errorf("%s: endpoint %d: %d overlapping calls (two pollers at once)", sc.sw.Name(), e.id, n)
		}
		if e.pops != swapPerEP || e.next != swapPerEP {
			t.Errorf("%s: endpoint %d: %d pops for %d frames", sc.sw.Name(), e.id, e.pops, swapPerEP)
		}
		delivered += len(e.got)
		used += e.used
	}
	if got != 4*swapPerEP || len(seen) != 4*swapPerEP {
		t.Errorf("%s: peer got %d frames, %d distinct; want %d", sc.sw.Name(), got, len(seen), 4*swapPerEP)
	}
	if delivered == 0 || delivered != used || uint64(delivered) != sc.guest.Stats().TxPackets {
		t.Errorf("%s: guest: %d frames flushed, %d used entries, port counted %d", sc.sw.Name(), delivered, used, sc.guest.Stats().TxPackets)
	}
	t.Logf("%s: %d frames to the guest, %d from it", sc.sw.Name(), delivered, got)
}

// TestSwapNeverDoubleServes: two guest ports (on two switches of one
// stack) have their queue pairs replaced again and again, at the same
// time (VQ_PAIRS_SET), while both directions carry traffic and three
// pollers run; pair 0 is in every set, as with a virtio-net driver. No
// endpoint may ever be served by two pollers at once: no overlapping
// calls, no frame popped twice, no used entry twice, every frame
// transmitted exactly once (run it with -race: the endpoints' ring
// positions are plain fields).
func TestSwapNeverDoubleServes(t *testing.T) {
	checkNoLeaks(t)
	scs := []*swapScenario{newSwapScenario(t, "sw0", 0), newSwapScenario(t, "sw1", 1)}
	st := startStack(t, netstack.Config{Pollers: 3, IdleAfter: 20 * time.Microsecond, Batch: 8}, scs[0].sw, scs[1].sw)
	errs := make(chan error, len(scs))
	for _, sc := range scs {
		go func() { errs <- sc.run(300) }()
	}
	for range scs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, sc := range scs {
		sc.check()
	}
	t.Logf("pollers %s", fmt.Sprint(st.Stats().Pollers))
}

// TestSetEndpointsRefuses: endpoints are known by identity, so a
// non-pointer, one given twice or one another port serves is refused,
// changing nothing.
func TestSetEndpointsRefuses(t *testing.T) {
	sw := netstack.NewSwitch("sw0")
	pa, _ := sw.AddPort("a")
	pb, _ := sw.AddPort("b")
	q, q2 := newQueue(t, 0), newQueue(t, 0)
	if err := pa.SetEndpoints([]netstack.Endpoint{q, q}); err == nil {
		t.Error("one endpoint twice accepted")
	}
	var nilQ *netstacktest.Queue
	if err := pa.SetEndpoints([]netstack.Endpoint{nilQ}); err == nil {
		t.Error("a nil endpoint accepted")
	}
	if err := pa.SetEndpoints([]netstack.Endpoint{q}); err != nil {
		t.Fatal(err)
	}
	if err := pb.SetEndpoints([]netstack.Endpoint{q2, q}); err == nil || pb.Queues() != 0 {
		t.Errorf("port b took port a's endpoint: %v, %d queues", err, pb.Queues())
	}
	st := startStack(t, netstack.Config{Pollers: 2}, sw)
	if err := pb.SetEndpoints([]netstack.Endpoint{q}); err == nil {
		t.Error("port b took port a's served endpoint")
	}
	// Another switch of the stack cannot take it either.
	sw2 := netstack.NewSwitch("sw1")
	pc, _ := sw2.AddPort("c")
	if err := st.AddSwitch(sw2); err != nil {
		t.Fatal(err)
	}
	if err := pc.SetEndpoints([]netstack.Endpoint{q}); err == nil {
		t.Error("a port of another switch took a served endpoint")
	}
	if err := pa.SetEndpoints(nil); err != nil {
		t.Fatal(err)
	}
	if err := pc.SetEndpoints([]netstack.Endpoint{q}); err != nil {
		t.Errorf("a released endpoint refused: %v", err)
	}
	_ = pc.SetEndpoints(nil)
}

// TestSetPaused: a paused port's endpoints get no call at all, frames to
// it are counted as paused drops, endpoints set meanwhile are recorded
// and attached on resume.
func TestSetPaused(t *testing.T) {
	checkNoLeaks(t)
	sc := newSwapScenario(t, "sw0", 0)
	st := startStack(t, netstack.Config{Pollers: 2, IdleAfter: 20 * time.Microsecond}, sc.sw)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			if sc.peer.Pending() > 64 {
				time.Sleep(20 * time.Microsecond)
				continue
			}
			f := netstacktest.Frame(sc.macG, macX, 96)
			binary.BigEndian.PutUint16(f[34:36], uint16(i))
			sc.peer.Inject(f)
		}
	}()
	e0, e1, e2 := sc.eps[0], sc.eps[1], sc.eps[2]
	if err := sc.guest.SetEndpoints(sc.set(0, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "traffic to the guest", func() bool { return sc.guest.Stats().TxPackets > 0 && e0.calls.Load() > 0 })
	if err := sc.guest.SetPaused(true); err != nil {
		t.Fatal(err)
	}
	c0, c1 := e0.calls.Load(), e1.calls.Load()
	down := sc.guest.Stats().Drops.PortDown
	if err := sc.guest.SetEndpoints(sc.set(2)); err != nil { // recorded only
		t.Fatal(err)
	}
	waitFor(t, "paused drops", func() bool { return sc.guest.Stats().Drops.Paused > 100 })
	s := sc.guest.Stats()
	if !s.Paused || s.Queues != 0 {
		t.Errorf("paused port stats: paused %v, %d queues", s.Paused, s.Queues)
	}
	if e0.calls.Load() != c0 || e1.calls.Load() != c1 || e2.calls.Load() != 0 {
		t.Fatalf("a paused port's endpoints were called: %d, %d, %d more calls",
			e0.calls.Load()-c0, e1.calls.Load()-c1, e2.calls.Load())
	}
	if s.Drops.PortDown != down {
		t.Errorf("paused drops counted as port-down (%d more)", s.Drops.PortDown-down)
	}
	if err := sc.guest.SetPaused(true); err != nil { // again: nothing
		t.Fatal(err)
	}
	if err := sc.guest.SetPaused(false); err != nil {
		t.Fatal(err)
	}
	if sc.guest.Paused() || sc.guest.Queues() != 1 {
		t.Fatalf("resumed: paused %v, %d queues; want endpoint 2 only", sc.guest.Paused(), sc.guest.Queues())
	}
	tx := sc.guest.Stats().TxPackets
	waitFor(t, "traffic to the endpoint set while paused", func() bool {
		return e2.calls.Load() > 0 && sc.guest.Stats().TxPackets > tx
	})
	if e0.calls.Load() != c0 || e1.calls.Load() != c1 {
		t.Error("endpoints replaced while paused were called after resume")
	}
	// Paused, then taken down, then resumed: down.
	_ = sc.guest.SetPaused(true)
	_ = sc.guest.SetEndpoints(nil)
	_ = sc.guest.SetPaused(false)
	down = sc.guest.Stats().Drops.PortDown
	waitFor(t, "port-down drops", func() bool { return sc.guest.Stats().Drops.PortDown > down })
	for _, e := range sc.eps {
		if e.overlaps.Load() != 0 {
			t.Errorf("endpoint %d: overlapping calls", e.id)
		}
	}
	var text strings.Builder
	_ = st.Stats().WriteText(&text)
	if !strings.Contains(text.String(), "paused") {
		t.Errorf("stats text has no paused column:\n%s", text.String())
	}
}
