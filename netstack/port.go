package netstack

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
)

// Port is one switch port: a guest NIC or an uplink, served through one or
// more Endpoints (queue pairs). Frames switched to a port go to one of its
// endpoints chosen by a hash of the frame's flow.
type Port struct {
	sw   *Switch
	name string
	// eps is what the pollers serve: the endpoints last set, or none while
	// the port is paused.
	eps     atomic.Pointer[epSet]
	removed atomic.Bool
	paused  atomic.Bool // changed with sw.mu held
	cnt     portCounters

	// allowed, when not nil, are the only source MACs (keys) the port may
	// send from: it is bound to them (SetAllowedSources).
	allowed atomic.Pointer[[]uint64]
	// limit is the most addresses the port may have learned (0: the
	// default); learned counts them (changed with the MAC table's lock
	// held); lastSweep is when the table was last searched for the
	// port's expired entries.
	limit     atomic.Int32
	learned   atomic.Int32
	lastSweep atomic.Int64

	// want is the endpoints last given to SetEndpoints, attached when
	// the port is not paused. Guarded by sw.mu.
	want []Endpoint
}

// epSet is an immutable snapshot of a port's endpoints.
type epSet struct {
	slots []*epSlot
}

// find returns the slot serving ep in the set, or nil.
func (set *epSet) find(ep Endpoint) *epSlot {
	for _, s := range set.slots {
		if s.ep == ep {
			return s
		}
	}
	return nil
}

// epSlot wraps one endpoint of a port. mu serialises Deliver and Flush
// across pollers, and guards hold.
type epSlot struct {
	ep   Endpoint
	oep  OffloadEndpoint // ep, if it can take pending offloads; else nil
	rxw  RxWaiter        // ep, if frames it has no room for may wait; else nil
	txc  TxCompleter     // ep, if it notifies its sender apart from Transmit; else nil
	kc   KickCounter     // ep, if it counts its WaitFD's signals; else nil
	port *Port
	mu   sync.Mutex
	// owner is the poller that calls Transmit, Arm and Disarm (changed
	// with Stack.mu held); nil once the slot is dropped.
	owner atomic.Pointer[poller]
	fd    int // WaitFD registered with owner's epoll, or -1
	rxfd  int // RxWaitFD registered with owner's epoll, or -1
	// hold queues frames waiting for the receiver's buffers; holding is
	// true while it is not empty (read without mu by the owner's passes).
	hold    frameQueue
	holding atomic.Bool
	// txDue is when the owner sends the transmit completion notice it
	// holds (Config.TxNoticeDelay), in monoNanos; 0 when it holds none.
	// The owner's thread only.
	txDue int64
}

// portCounters are a port's counters. "rx" is what the switch received
// from the port (the guest's or host's transmissions), "tx" what it
// delivered to the port.
type portCounters struct {
	rxPackets, rxBytes atomic.Uint64
	txPackets, txBytes atomic.Uint64
	held               atomic.Uint64
	noRoom             atomic.Uint64
	expired            atomic.Uint64
	portDown           atomic.Uint64
	paused             atomic.Uint64
	runt               atomic.Uint64
	badSource          atomic.Uint64
	spoofed            atomic.Uint64
	learnRefused       atomic.Uint64
	filtered           atomic.Uint64
	badOffload         atomic.Uint64
	softOffload        atomic.Uint64
}

// Name returns the port's name.
func (p *Port) Name() string { return p.name }

// Switch returns the switch the port belongs to.
func (p *Port) Switch() *Switch { return p.sw }

// Queues returns how many endpoints the port has now; 0 means it is down.
func (p *Port) Queues() int { return len(p.eps.Load().slots) }

// SetEndpoints replaces the port's endpoints with eps; nil or empty takes
// the port down, and frames switched to it are then dropped and counted as
// port-down drops. New endpoints are assigned to the stack's pollers; an
// endpoint that was already the port's keeps its poller (a virtio-net
// driver's VQ_PAIRS_SET keeps pair 0), so at no moment do two pollers
// serve one endpoint. While the port is paused, eps is recorded and
// attached when it is resumed (SetPaused).
//
// An endpoint is known by its identity: each must be a pointer, none may
// appear twice, nor be served by another port of the same stack.
//
// SetEndpoints returns only once no poller is inside any method of an
// endpoint it dropped, nor will be again, and their wait fds are no longer
// registered: the caller may then free those queues (a virtio-net reset
// does). It must not be called from a poller (an Endpoint method).
func (p *Port) SetEndpoints(eps []Endpoint) error {
	sw := p.sw
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if p.removed.Load() && len(eps) > 0 {
		return fmt.Errorf("port %s/%s: set endpoints: port removed", sw.name, p.name)
	}
	if err := checkEndpoints(eps); err != nil {
		return fmt.Errorf("port %s/%s: set endpoints: %w", sw.name, p.name, err)
	}
	if p.paused.Load() {
		p.want = append([]Endpoint(nil), eps...)
		return nil
	}
	applied, err := p.apply(eps)
	if applied {
		p.want = append([]Endpoint(nil), eps...)
	}
	return err
}

// checkEndpoints refuses endpoints that are not pointers, or that appear
// twice.
func checkEndpoints(eps []Endpoint) error {
	for i, ep := range eps {
		if ep == nil || reflect.TypeOf(ep).Kind() != reflect.Pointer || reflect.ValueOf(ep).IsNil() {
			return fmt.Errorf("endpoint %d (%T) is not a non-nil pointer", i, ep)
		}
		for _, e := range eps[:i] {
			if e == ep {
				return fmt.Errorf("endpoint %d (%T) is given twice", i, ep)
			}
		}
	}
	return nil
}

// apply makes eps the endpoints the pollers serve: the port's slots for
// endpoints it keeps stay as they are (same poller, same lock), new ones
// get new slots, dropped ones are taken from their pollers. It reports
// whether it changed the port (an error may still come with a change: a
// wait fd the poller could not register). Called with sw.mu held.
func (p *Port) apply(eps []Endpoint) (bool, error) {
	old := p.eps.Load()
	set := &epSet{slots: make([]*epSlot, len(eps))}
	var fresh []*epSlot
	for i, ep := range eps {
		if s := old.find(ep); s != nil {
			set.slots[i] = s
			continue
		}
		oep, _ := ep.(OffloadEndpoint)
		rxw, _ := ep.(RxWaiter)
		txc, _ := ep.(TxCompleter)
		kc, _ := ep.(KickCounter)
		s := &epSlot{ep: ep, oep: oep, rxw: rxw, txc: txc, kc: kc, port: p, fd: -1, rxfd: -1,
			hold: frameQueue{maxFrames: holdFrames, maxBytes: holdBytes}}
		set.slots[i], fresh = s, append(fresh, s)
	}
	for _, s := range fresh {
		for _, q := range *p.sw.ports.Load() {
			if q != p && q.eps.Load().find(s.ep) != nil {
				return false, fmt.Errorf("%w (port %s/%s)", errInUse, q.sw.name, q.name)
			}
		}
	}
	var gone []*epSlot
	for _, s := range old.slots {
		if set.find(s.ep) == nil {
			gone = append(gone, s)
		}
	}
	st := p.sw.stack
	if st == nil {
		p.eps.Store(set)
		return true, nil
	}
	return st.replace(p, set, gone, fresh)
}

// SetPaused pauses (true) or resumes (false) the port. A paused port's
// endpoints are detached from every poller exactly as SetEndpoints(nil)
// would do — no Transmit, Deliver, Flush, Arm or Disarm; quiesced when
// SetPaused returns — and frames switched to it are dropped and counted
// as paused drops. SetEndpoints on a paused port records the endpoints
// without attaching them; resuming attaches the endpoints last set.
// Pausing a paused port, or resuming a running one, does nothing. It must
// not be called from a poller.
func (p *Port) SetPaused(paused bool) error {
	sw := p.sw
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if p.paused.Load() == paused {
		return nil
	}
	if paused {
		p.paused.Store(true)
		_, err := p.apply(nil)
		return err
	}
	applied, err := p.apply(p.want)
	if applied {
		p.paused.Store(false)
	}
	if err != nil {
		return fmt.Errorf("port %s/%s: resume: %w", sw.name, p.name, err)
	}
	return nil
}

// Paused reports whether the port is paused.
func (p *Port) Paused() bool { return p.paused.Load() }

// errInUse refuses an endpoint another port of the stack serves.
var errInUse = errors.New("endpoint already served by another port")

// Stats returns a snapshot of the port's counters.
func (p *Port) Stats() PortStats {
	c := &p.cnt
	return PortStats{
		Switch:       p.sw.name,
		Name:         p.name,
		Queues:       p.Queues(),
		Paused:       p.paused.Load(),
		Bound:        p.allowed.Load() != nil,
		Learned:      int(p.learned.Load()),
		LearnLimit:   p.learnLimit(),
		LearnRefused: c.learnRefused.Load(),
		RxPackets:    c.rxPackets.Load(),
		RxBytes:      c.rxBytes.Load(),
		TxPackets:    c.txPackets.Load(),
		TxBytes:      c.txBytes.Load(),
		SoftOffload:  c.softOffload.Load(),
		Held:         c.held.Load(),
		Drops: DropStats{
			NoRoom:     c.noRoom.Load(),
			Expired:    c.expired.Load(),
			PortDown:   c.portDown.Load(),
			Paused:     c.paused.Load(),
			Runt:       c.runt.Load(),
			BadSource:  c.badSource.Load(),
			Spoofed:    c.spoofed.Load(),
			Filtered:   c.filtered.Load(),
			BadOffload: c.badOffload.Load(),
		},
	}
}

// MaxAllowedSources is the most source addresses a port may be bound to.
const MaxAllowedSources = 16

// SetAllowedSources binds the port to the source MAC addresses macs, as a
// cloud virtual switch binds a guest NIC to its configured MAC: frames
// from the port with any other source are dropped and counted as spoofed;
// the addresses are pinned to the port in the MAC table (they never age,
// and no other port can take them over or evict them); the port learns
// nothing else. nil or empty unbinds the port, which then learns freely
// (within its learn limit) like an uplink. It fails, changing nothing, for
// a multicast or zero address, more than MaxAllowedSources, or an address
// another port is bound to.
func (p *Port) SetAllowedSources(macs [][6]byte) error {
	sw := p.sw
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if p.removed.Load() {
		return fmt.Errorf("port %s/%s: set allowed sources: port removed", sw.name, p.name)
	}
	if len(macs) == 0 {
		p.allowed.Store(nil)
		sw.macs.forget(p)
		return nil
	}
	if len(macs) > MaxAllowedSources {
		return fmt.Errorf("port %s/%s: %d allowed sources, at most %d", sw.name, p.name, len(macs), MaxAllowedSources)
	}
	var keys []uint64
	for _, m := range macs {
		if m[0]&1 != 0 || m == ([6]byte{}) {
			return fmt.Errorf("port %s/%s: allowed source %s is not a unicast address", sw.name, p.name, formatMAC(m))
		}
		if k := macKey(m[:]); !hasKey(keys, k) {
			keys = append(keys, k)
		}
	}
	// Refuse other sources from now on, then pin these.
	old := p.allowed.Swap(&keys)
	if err := sw.macs.bind(p, keys, sw.now()); err != nil {
		p.allowed.Store(old)
		return fmt.Errorf("port %s/%s: set allowed sources: %w", sw.name, p.name, err)
	}
	return nil
}

// AllowedSources returns the addresses the port is bound to, or nil when
// it is not bound.
func (p *Port) AllowedSources() [][6]byte {
	a := p.allowed.Load()
	if a == nil {
		return nil
	}
	macs := make([][6]byte, len(*a))
	for i, k := range *a {
		macs[i] = keyMAC(k)
	}
	return macs
}

// SetLearnLimit sets how many addresses the port may have learned at once
// (n <= 0: DefaultLearnLimit). Past it, frames from new source addresses
// are still switched, but their sources are not learned (counted as
// learn_refused), so one port cannot fill the switch's table. A bound
// port learns only its own addresses whatever its limit.
func (p *Port) SetLearnLimit(n int) {
	if n <= 0 || n > macTableBuckets*macTableWays {
		n = 0
	}
	p.limit.Store(int32(n))
}

// learnLimit is the port's learn limit in effect.
func (p *Port) learnLimit() int {
	if n := p.limit.Load(); n > 0 {
		return int(n)
	}
	return DefaultLearnLimit
}

// allows reports whether the port may send from source key.
func (p *Port) allows(key uint64) bool {
	a := p.allowed.Load()
	return a == nil || hasKey(*a, key)
}
