package netstack_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/colibrivm/colibri/netstack"
)

// randomSource is the i-th of a flood of made-up unicast source MACs.
func randomSource(i int) [6]byte {
	var m [6]byte
	binary.BigEndian.PutUint32(m[2:], uint32(i)*2654435761)
	m[0], m[1] = 0x02, byte(i>>8) // locally administered unicast
	return m
}

// TestSourceFloodEvictsNobody: a port sending from thousands of made-up
// source addresses neither evicts the addresses other ports' hosts were
// learned at (their traffic would be flooded, to every port) nor fills
// the table: it learns at most its limit.
func TestSourceFloodEvictsNobody(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.send("b", frame(bcast, macB))
	r.send("c", frame(bcast, macC))
	r.qs["a"].Take()
	r.qs["b"].Take()
	r.qs["c"].Take()
	for i := range 10000 {
		r.now++
		r.send("a", frame(macX, randomSource(i)))
	}
	r.qs["b"].Take()
	r.qs["c"].Take()
	if p := r.sw.Lookup(macB[:]); p != r.ports["b"] {
		t.Errorf("after the flood B is at %v, want port b", p)
	}
	if p := r.sw.Lookup(macC[:]); p != r.ports["c"] {
		t.Errorf("after the flood C is at %v, want port c", p)
	}
	if n := r.sw.MACs(); n > netstack.DefaultLearnLimit+2 {
		t.Errorf("the table holds %d addresses after one port's flood, want at most %d", n, netstack.DefaultLearnLimit+2)
	}
	f := frame(macB, macA)
	r.send("a", f)
	r.expect(f, "b") // not flooded to c
}

// TestBoundPortCannotSpoof: a guest port bound to its MAC cannot claim a
// neighbour's address (and so receive its traffic), nor send from made-up
// ones; frames from it with another source are dropped and counted; its
// own address is pinned to it, and no other port can take it over.
func TestBoundPortCannotSpoof(t *testing.T) {
	r := newRig(t, "uplink", "g1", "g2")
	g1, g2 := r.ports["g1"], r.ports["g2"]
	if err := g1.SetAllowedSources([][6]byte{macA}); err != nil {
		t.Fatal(err)
	}
	if err := g2.SetAllowedSources([][6]byte{macB}); err != nil {
		t.Fatal(err)
	}
	if r.sw.Lookup(macA[:]) != g1 || r.sw.Lookup(macB[:]) != g2 {
		t.Fatal("bound addresses are not pinned to their ports")
	}
	// g2 claims g1's address, then a made-up one.
	r.qs["g2"].Inject(frame(bcast, macA), frame(macX, macC))
	if n := r.sp.Poll(r.order...); n != 2 {
		t.Fatalf("polled %d frames", n)
	}
	r.expect(nil)
	if d := g2.Stats().Drops; d.Spoofed != 2 {
		t.Errorf("g2 spoofed drops %d, want 2", d.Spoofed)
	}
	if r.sw.Lookup(macA[:]) != g1 || r.sw.Lookup(macC[:]) != nil {
		t.Fatal("a spoofed source was learned")
	}
	// The uplink claims g1's address too: it is not moved.
	r.send("uplink", frame(macX, macA))
	r.qs["g1"].Take()
	r.qs["g2"].Take()
	if r.sw.Lookup(macA[:]) != g1 {
		t.Fatal("the uplink took over a bound address")
	}
	f := frame(macA, macX)
	r.send("uplink", f)
	r.expect(f, "g1") // traffic to A still reaches g1 only
	// The bound addresses never age.
	r.now += int64(2 * netstack.DefaultAgeing)
	if r.sw.Lookup(macA[:]) != g1 {
		t.Fatal("a bound address aged out")
	}
	// g1 sends from its own address: fine.
	f = frame(macB, macA)
	r.send("g1", f)
	r.expect(f, "g2")
	// Binding to an address bound elsewhere fails and changes nothing.
	if err := g2.SetAllowedSources([][6]byte{macA}); err == nil {
		t.Error("bound g2 to g1's address")
	}
	if got := g2.AllowedSources(); len(got) != 1 || got[0] != macB {
		t.Errorf("g2's sources after a refused bind: %v", got)
	}
	if err := g1.SetAllowedSources([][6]byte{{0x01, 0, 0, 0, 0, 1}}); err == nil {
		t.Error("bound to a multicast address")
	}
	if err := r.sw.Learn(macC[:], g1); err == nil {
		t.Error("learned another address on a bound port")
	}
	s := g1.Stats()
	if !s.Bound || s.Learned != 0 {
		t.Errorf("g1 stats: bound %v, learned %d", s.Bound, s.Learned)
	}
	// Unbinding frees the address and lets the port learn again.
	if err := g1.SetAllowedSources(nil); err != nil {
		t.Fatal(err)
	}
	r.send("g1", frame(macX, macC))
	r.qs["uplink"].Take()
	r.qs["g2"].Take()
	if r.sw.Lookup(macC[:]) != g1 || g1.Stats().Bound {
		t.Error("an unbound port does not learn")
	}
}

// TestLearnLimit: a port learns at most its limit; past it sources are
// not learned (and counted), the frames still switched; expired entries
// make room again.
func TestLearnLimit(t *testing.T) {
	r := newRig(t, "a", "b")
	r.sw.SetAgeing(10 * time.Second)
	r.ports["a"].SetLearnLimit(8)
	for i := range 20 {
		r.send("a", frame(macB, randomSource(i)))
	}
	if got := len(r.qs["b"].Take()); got != 20 {
		t.Errorf("b got %d frames, want all 20", got)
	}
	s := r.ports["a"].Stats()
	if s.Learned != 8 || s.LearnLimit != 8 || s.LearnRefused != 12 {
		t.Errorf("port a: learned %d (limit %d), %d refused; want 8, 8, 12", s.Learned, s.LearnLimit, s.LearnRefused)
	}
	first, last, later := randomSource(0), randomSource(19), randomSource(100)
	if r.sw.Lookup(first[:]) != r.ports["a"] || r.sw.Lookup(last[:]) != nil {
		t.Error("the first sources should be learned, the last not")
	}
	// Once the learned ones expire, new ones are learned.
	r.now += int64(11 * time.Second)
	r.send("a", frame(macB, randomSource(100)))
	if r.sw.Lookup(later[:]) != r.ports["a"] {
		t.Error("a source was refused although the port's entries expired")
	}
	if s := r.ports["a"].Stats(); s.Learned != 1 {
		t.Errorf("learned %d after the sweep, want 1", s.Learned)
	}
	if r.ports["b"].Stats().LearnLimit != netstack.DefaultLearnLimit {
		t.Error("default limit not reported")
	}
}
