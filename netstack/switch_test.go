package netstack_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/vnet"
	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/netstack/netstacktest"
)

var (
	macA  = [6]byte{0x52, 0x54, 0, 0, 0, 0x0a}
	macB  = [6]byte{0x52, 0x54, 0, 0, 0, 0x0b}
	macC  = [6]byte{0x52, 0x54, 0, 0, 0, 0x0c}
	macX  = [6]byte{0x52, 0x54, 0, 0, 0, 0x99}
	bcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	mcast = [6]byte{0x01, 0x00, 0x5e, 0, 0, 1}
)

// rig is a switch with named ports, one Queue each, driven synchronously.
type rig struct {
	t     *testing.T
	sw    *netstack.Switch
	sp    *netstack.SyncPoller
	ports map[string]*netstack.Port
	qs    map[string]*netstacktest.Queue
	order []*netstack.Port
	now   int64
}

func newRig(t *testing.T, names ...string) *rig {
	t.Helper()
	r := &rig{t: t, sw: netstack.NewSwitch("sw0"), sp: netstack.NewSyncPoller(64),
		ports: map[string]*netstack.Port{}, qs: map[string]*netstacktest.Queue{}}
	netstack.SetClock(r.sw, func() int64 { return r.now })
	for _, n := range names {
		p, err := r.sw.AddPort(n)
		if err != nil {
			t.Fatal(err)
		}
		q := newQueue(t, 0)
		if err := p.SetEndpoints([]netstack.Endpoint{q}); err != nil {
			t.Fatal(err)
		}
		r.ports[n], r.qs[n] = p, q
		r.order = append(r.order, p)
	}
	return r
}

func newQueue(t testing.TB, rxCap int) *netstacktest.Queue {
	t.Helper()
	q, err := netstacktest.NewQueue(rxCap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

// send injects frames on port from and runs one pass.
func (r *rig) send(from string, frames ...[]byte) {
	r.t.Helper()
	r.qs[from].Inject(frames...)
	if n := r.sp.Poll(r.order...); n != uint64(len(frames)) {
		r.t.Fatalf("switched %d frames, want %d", n, len(frames))
	}
}

// expect checks that exactly the named ports received frame since the
// last expect.
func (r *rig) expect(frame []byte, want ...string) {
	r.t.Helper()
	got := map[string]bool{}
	for n, q := range r.qs {
		for _, f := range q.Take() {
			if !bytes.Equal(f, frame) {
				r.t.Errorf("port %s got an unexpected frame % x", n, f[:14])
				continue
			}
			if got[n] {
				r.t.Errorf("port %s got the frame twice", n)
			}
			got[n] = true
		}
	}
	for _, n := range want {
		if !got[n] {
			r.t.Errorf("port %s did not get the frame", n)
		}
		delete(got, n)
	}
	for n := range got {
		r.t.Errorf("port %s got the frame, should not have", n)
	}
}

func frame(dst, src [6]byte) []byte { return netstacktest.Frame(dst, src, 64) }

func TestLearningAndFlooding(t *testing.T) {
	r := newRig(t, "a", "b", "c")

	f := frame(bcast, macA)
	r.send("a", f)
	r.expect(f, "b", "c") // broadcast floods, never back to a

	f = frame(macA, macB)
	r.send("b", f)
	r.expect(f, "a") // a learned from its broadcast

	f = frame(macB, macA)
	r.send("a", f)
	r.expect(f, "b")

	f = frame(macX, macA)
	r.send("a", f)
	r.expect(f, "b", "c") // unknown unicast floods

	f = frame(mcast, macC)
	r.send("c", f)
	r.expect(f, "a", "b")

	// A station moving to another port is relearned there.
	f = frame(bcast, macB)
	r.send("c", f)
	r.expect(f, "a", "b")
	f = frame(macB, macA)
	r.send("a", f)
	r.expect(f, "c")

	// No hairpin: a frame to a MAC learned on its own port is filtered.
	f = frame(macA, macX)
	r.send("a", f)
	r.expect(f)

	if got := r.sw.MACs(); got != 4 { // A, B, C, X
		t.Errorf("MACs() = %d, want 4", got)
	}
	if p := r.sw.Lookup(macB[:]); p != r.ports["c"] {
		t.Errorf("Lookup(B) = %v, want port c", p)
	}
	sa := r.ports["a"].Stats()
	if sa.RxPackets != 5 || sa.RxBytes != 5*64 || sa.Drops.Filtered != 1 {
		t.Errorf("port a stats %+v: want 5 rx frames of 64 B, 1 filtered", sa)
	}
	if sa.TxPackets != 3 || sa.TxBytes != 3*64 {
		t.Errorf("port a stats %+v: want 3 tx frames", sa)
	}
	if sc := r.ports["c"].Stats(); sc.TxPackets != 3 || sc.RxPackets != 2 {
		t.Errorf("port c stats %+v: want 3 tx, 2 rx", sc)
	}
}

func TestMalformedFrames(t *testing.T) {
	r := newRig(t, "a", "b")
	runt := []byte{1, 2, 3}
	bad := frame(macB, [6]byte{0x01, 0, 0, 0, 0, 1}) // multicast source
	r.send("a", runt, bad, []byte{})
	r.expect(nil)
	d := r.ports["a"].Stats().Drops
	if d.Runt != 2 || d.BadSource != 1 {
		t.Errorf("drops %+v, want 2 runts and 1 bad source", d)
	}
	if r.sw.MACs() != 0 {
		t.Errorf("learned %d MACs from malformed frames", r.sw.MACs())
	}
}

func TestAgeing(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.sw.SetAgeing(10 * time.Second)
	r.send("b", frame(bcast, macB))
	r.expect(frame(bcast, macB), "a", "c")

	r.now = int64(10 * time.Second) // exactly the ageing time: still known
	f := frame(macB, macA)
	r.send("a", f)
	r.expect(f, "b")

	// A learns at 10 s; B was last seen at 0 and ages out after 10 s.
	r.now = int64(10*time.Second + 1)
	r.send("a", f)
	r.expect(f, "b", "c")
	if r.sw.Lookup(macB[:]) != nil {
		t.Error("B still known after ageing")
	}
	if got := r.sw.MACs(); got != 1 {
		t.Errorf("MACs() = %d after ageing, want 1 (A)", got)
	}
	// Seeing B again relearns it.
	r.send("b", frame(macA, macB))
	r.expect(frame(macA, macB), "a")
	r.send("a", f)
	r.expect(f, "b")
}

func TestAgeingRefresh(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.sw.SetAgeing(16 * time.Second)
	step := int64(8 * time.Second)
	// B keeps talking every 8 s: it must never age out.
	for i := range 5 {
		r.now = int64(i) * step
		r.send("b", frame(macX, macB))
		r.qs["a"].Take()
		r.qs["c"].Take()
		f := frame(macB, macA)
		r.send("a", f)
		r.expect(f, "b")
	}
}

func TestPortDownAndNoRoom(t *testing.T) {
	r := newRig(t, "a", "b")
	r.send("b", frame(macA, macB))
	r.qs["a"].Take()
	if err := r.ports["b"].SetEndpoints(nil); err != nil {
		t.Fatal(err)
	}
	if q := r.ports["b"].Queues(); q != 0 {
		t.Fatalf("Queues() = %d after SetEndpoints(nil)", q)
	}
	r.send("a", frame(macB, macA), frame(bcast, macA))
	if d := r.ports["b"].Stats().Drops; d.PortDown != 2 {
		t.Errorf("port b drops %+v, want 2 port-down", d)
	}

	small := newQueue(t, 2)
	if err := r.ports["b"].SetEndpoints([]netstack.Endpoint{small}); err != nil {
		t.Fatal(err)
	}
	f := frame(macB, macA)
	r.send("a", f, f, f, f)
	if got := len(small.Take()); got != 2 {
		t.Errorf("small queue got %d frames, want 2", got)
	}
	st := r.ports["b"].Stats()
	if st.Drops.NoRoom != 2 || st.TxPackets != 2 {
		t.Errorf("port b %+v, want 2 delivered and 2 no-room", st)
	}
}

func udpFrame(srcPort uint16) []byte {
	f := netstacktest.Frame(macB, macA, 128)
	binary.BigEndian.PutUint16(f[34:36], srcPort)
	return f
}

func TestMultiQueueFlowHashAndFlushPerBatch(t *testing.T) {
	r := newRig(t, "a", "b")
	r.send("b", frame(macA, macB))
	r.qs["a"].Take()
	qs := make([]*netstacktest.Queue, 4)
	eps := make([]netstack.Endpoint, 4)
	for i := range qs {
		qs[i] = newQueue(t, 0)
		eps[i] = qs[i]
	}
	if err := r.ports["b"].SetEndpoints(eps); err != nil {
		t.Fatal(err)
	}
	// One flow: every frame on the same queue, in order, one Flush.
	var batch [][]byte
	for i := range 20 {
		f := udpFrame(1000)
		f[60] = byte(i)
		batch = append(batch, f)
	}
	r.send("a", batch...)
	hit := -1
	for i, q := range qs {
		got := q.Take()
		if len(got) == 0 {
			continue
		}
		if hit >= 0 {
			t.Fatalf("one flow spread over queues %d and %d", hit, i)
		}
		hit = i
		if len(got) != 20 {
			t.Fatalf("queue %d got %d frames, want 20", i, len(got))
		}
		for j, f := range got {
			if f[60] != byte(j) {
				t.Fatalf("frame %d out of order", j)
			}
		}
		if q.Flushes() != 1 {
			t.Errorf("queue %d flushed %d times for one batch, want 1", i, q.Flushes())
		}
	}
	// Many flows: more than one queue used.
	batch = batch[:0]
	for p := range 64 {
		batch = append(batch, udpFrame(uint16(2000+p)))
	}
	r.send("a", batch...)
	used := 0
	for _, q := range qs {
		if len(q.Take()) > 0 {
			used++
		}
	}
	if used < 2 {
		t.Errorf("64 flows used %d of 4 queues", used)
	}
}

func TestPortNames(t *testing.T) {
	sw := netstack.NewSwitch("sw0")
	p, err := sw.AddPort("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.AddPort("a"); err == nil {
		t.Fatal("duplicate port name accepted")
	}
	if _, err := sw.AddPort(""); err == nil {
		t.Fatal("empty port name accepted")
	}
	if err := sw.Learn(macA[:], p); err != nil {
		t.Fatal(err)
	}
	if err := sw.RemovePort(p); err != nil {
		t.Fatal(err)
	}
	if sw.Lookup(macA[:]) != nil {
		t.Error("MAC of a removed port still known")
	}
	if _, err := sw.AddPort("a"); err != nil {
		t.Fatalf("name not freed by RemovePort: %v", err)
	}
	if err := sw.RemovePort(p); err == nil {
		t.Fatal("removing a port twice succeeded")
	}
}

func TestZeroAllocsPerFrame(t *testing.T) {
	sw := netstack.NewSwitch("sw0")
	pa, _ := sw.AddPort("a")
	pb, _ := sw.AddPort("b")
	gen, err := netstacktest.NewGenerator(netstacktest.Frame(macB, macA, 64))
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	sink, err := netstacktest.NewSink()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	_ = pa.SetEndpoints([]netstack.Endpoint{gen})
	_ = pb.SetEndpoints([]netstack.Endpoint{sink})
	sp := netstack.NewSyncPoller(32)
	for _, learned := range []bool{false, true} {
		if learned {
			_ = sw.Learn(macB[:], pb)
		}
		allocs := testing.AllocsPerRun(100, func() {
			gen.Send(32)
			sp.Poll(pa, pb)
		})
		if allocs != 0 {
			t.Errorf("learned=%v: %.1f allocations per batch of 32 frames, want 0", learned, allocs)
		}
	}
	if sink.Delivered() < 200*32 {
		t.Errorf("sink got %d frames", sink.Delivered())
	}
}

// tcpGSOFrame is a TCP/IPv4 frame from src to dst with payload bytes of
// data, as a sender with TSO leaves it, and the offload describing it.
func tcpGSOFrame(dst, src [6]byte, payload, mss int) ([]byte, vnet.Offload) {
	f := make([]byte, 14+20+20+payload)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(ip[2:], uint16(20+20+payload))
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	tcp := ip[20:]
	tcp[12], tcp[13] = 5<<4, 0x18
	return f, vnet.Offload{NeedsCsum: true, CsumStart: 34, CsumOffset: 16, GSOType: vnet.GSOTCPv4, GSOSize: uint16(mss), HdrLen: 54}
}

// TestSwitchOffloads: a TSO frame reaches a port that takes offloads as
// one frame with its offload, and a port that does not as complete
// MSS-sized segments (counted as finished in software); a request that
// does not fit its frame is dropped and counted on the sender's port.
func TestSwitchOffloads(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.qs["b"].SetAcceptOffload(true)
	f, off := tcpGSOFrame(bcast, macA, 4000, 1448)
	r.qs["a"].InjectOffload(f, off)
	if n := r.sp.Poll(r.order...); n != 1 {
		t.Fatalf("switched %d frames, want 1", n)
	}
	got := r.qs["b"].TakeFrames()
	if len(got) != 1 || !bytes.Equal(got[0].Data, f) || got[0].Off != off {
		t.Fatalf("port b (takes offloads) got %d frames, want the TSO frame with its offload", len(got))
	}
	segs := r.qs["c"].TakeFrames()
	if len(segs) != 3 {
		t.Fatalf("port c (no offloads) got %d frames, want 3 segments", len(segs))
	}
	total := 0
	for _, s := range segs {
		if s.Off.Pending() || len(s.Data) > 14+40+1448 {
			t.Errorf("segment of %d bytes with offload %+v: want complete frames of at most one MSS", len(s.Data), s.Off)
		}
		total += len(s.Data) - 54
	}
	if total != 4000 {
		t.Errorf("segments carry %d payload bytes, want 4000", total)
	}
	if st := r.ports["c"].Stats(); st.SoftOffload != 1 || st.TxPackets != 3 {
		t.Errorf("port c: soft_offload %d, tx_packets %d; want 1 and 3", st.SoftOffload, st.TxPackets)
	}

	bad := off
	bad.CsumStart = uint16(len(f))
	r.qs["a"].InjectOffload(f, bad)
	r.sp.Poll(r.order...)
	if st := r.ports["a"].Stats(); st.Drops.BadOffload != 1 {
		t.Errorf("port a: bad_offload %d, want 1", st.Drops.BadOffload)
	}
	if n := len(r.qs["b"].Take()) + len(r.qs["c"].Take()); n != 0 {
		t.Errorf("a frame with a bad offload request reached %d ports", n)
	}
}
