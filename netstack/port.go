package netstack

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Port is one switch port: a guest NIC or an uplink, served through one or
// more Endpoints (queue pairs). Frames switched to a port go to one of its
// endpoints chosen by a hash of the frame's flow.
type Port struct {
	sw      *Switch
	name    string
	eps     atomic.Pointer[epSet]
	removed atomic.Bool
	cnt     portCounters
}

// epSet is an immutable snapshot of a port's endpoints.
type epSet struct {
	slots []*epSlot
}

// epSlot wraps one endpoint of a port. mu serialises Deliver and Flush
// across pollers.
type epSlot struct {
	ep    Endpoint
	oep   OffloadEndpoint // ep, if it can take pending offloads; else nil
	port  *Port
	mu    sync.Mutex
	owner *poller // the poller that calls Transmit; guarded by Stack.mu
	fd    int     // WaitFD registered with owner's epoll, or -1
}

// portCounters are a port's counters. "rx" is what the switch received
// from the port (the guest's or host's transmissions), "tx" what it
// delivered to the port.
type portCounters struct {
	rxPackets, rxBytes atomic.Uint64
	txPackets, txBytes atomic.Uint64
	noRoom             atomic.Uint64
	portDown           atomic.Uint64
	runt               atomic.Uint64
	badSource          atomic.Uint64
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
// port-down drops. New endpoints are assigned to the stack's pollers.
//
// SetEndpoints returns only once no poller is inside any method of the old
// endpoints, nor will be again, and their wait fds are no longer
// registered: the caller may then free the old queues (a virtio-net reset
// does). It must not be called from a poller (an Endpoint method).
func (p *Port) SetEndpoints(eps []Endpoint) error {
	sw := p.sw
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if p.removed.Load() && len(eps) > 0 {
		return fmt.Errorf("port %s/%s: set endpoints: port removed", sw.name, p.name)
	}
	set := &epSet{slots: make([]*epSlot, len(eps))}
	for i, ep := range eps {
		oep, _ := ep.(OffloadEndpoint)
		set.slots[i] = &epSlot{ep: ep, oep: oep, port: p, fd: -1}
	}
	old := p.eps.Swap(set)
	st := sw.stack
	if st == nil {
		return nil
	}
	return st.replace(old.slots, set.slots)
}

// Stats returns a snapshot of the port's counters.
func (p *Port) Stats() PortStats {
	c := &p.cnt
	return PortStats{
		Switch:      p.sw.name,
		Name:        p.name,
		Queues:      p.Queues(),
		RxPackets:   c.rxPackets.Load(),
		RxBytes:     c.rxBytes.Load(),
		TxPackets:   c.txPackets.Load(),
		TxBytes:     c.txBytes.Load(),
		SoftOffload: c.softOffload.Load(),
		Drops: DropStats{
			NoRoom:     c.noRoom.Load(),
			PortDown:   c.portDown.Load(),
			Runt:       c.runt.Load(),
			BadSource:  c.badSource.Load(),
			Filtered:   c.filtered.Load(),
			BadOffload: c.badOffload.Load(),
		},
	}
}
