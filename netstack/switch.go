package netstack

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultAgeing is how long a switch remembers a MAC address it has not
// seen as a source since.
const DefaultAgeing = 300 * time.Second

// Switch is an L2 learning switch between ports. It learns each frame's
// source MAC on the port it came from, forwards frames to a learned
// unicast destination, and floods broadcast, multicast and unknown
// unicast frames to every other port. It never sends a frame back out of
// the port it came in on.
//
// Against hostile guests: a port bound to its sources (a guest NIC, see
// Port.SetAllowedSources) may send only from them, and they are pinned to
// it; any port learns at most its learn limit (Port.SetLearnLimit), and
// learning never evicts another port's live entry, so a port flooding
// made-up sources cannot take or push out its neighbours' addresses.
//
// A Switch forwards nothing by itself: attach it to a Stack, whose pollers
// drain its ports' endpoints.
type Switch struct {
	name string

	// ageing and refresh are in nanoseconds, read by pollers.
	ageing  atomic.Int64
	refresh atomic.Int64
	// now returns a monotonic time in nanoseconds; tests replace it.
	now   func() int64
	macs  macTable
	ports atomic.Pointer[[]*Port]

	mu    sync.Mutex // guards stack, byName and port list changes
	stack *Stack
	names map[string]*Port
}

// NewSwitch returns an empty switch named name with DefaultAgeing.
func NewSwitch(name string) *Switch {
	epoch := time.Now()
	sw := &Switch{
		name:  name,
		now:   func() int64 { return int64(time.Since(epoch)) },
		names: make(map[string]*Port),
	}
	sw.ports.Store(new([]*Port))
	sw.macs.init()
	sw.SetAgeing(DefaultAgeing)
	return sw
}

// Name returns the switch's name.
func (sw *Switch) Name() string { return sw.name }

// SetAgeing sets how long a learned MAC address is kept without being seen
// again; d <= 0 restores DefaultAgeing.
func (sw *Switch) SetAgeing(d time.Duration) {
	if d <= 0 {
		d = DefaultAgeing
	}
	sw.ageing.Store(int64(d))
	// Refresh an entry's timestamp at most every ageing/16 (and at most
	// every second), so learning a busy flow rarely writes the table.
	r := min(d/16, time.Second)
	sw.refresh.Store(int64(r))
}

// Ageing returns the current MAC ageing time.
func (sw *Switch) Ageing() time.Duration { return time.Duration(sw.ageing.Load()) }

// AddPort adds a port named name, which must be unique on this switch. The
// port starts down (no endpoints); see Port.SetEndpoints.
func (sw *Switch) AddPort(name string) (*Port, error) {
	if name == "" {
		return nil, fmt.Errorf("switch %s: add port: empty name", sw.name)
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if _, dup := sw.names[name]; dup {
		return nil, fmt.Errorf("switch %s: add port %s: a port with that name exists", sw.name, name)
	}
	p := &Port{sw: sw, name: name}
	p.eps.Store(&epSet{})
	sw.names[name] = p
	old := *sw.ports.Load()
	ports := make([]*Port, len(old), len(old)+1)
	copy(ports, old)
	ports = append(ports, p)
	sw.ports.Store(&ports)
	return p, nil
}

// Port returns the port named name, or nil.
func (sw *Switch) Port(name string) *Port {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.names[name]
}

// Ports returns the switch's ports in the order they were added.
func (sw *Switch) Ports() []*Port {
	ps := *sw.ports.Load()
	return append([]*Port(nil), ps...)
}

// RemovePort takes p down (as SetEndpoints(nil) does), forgets the MACs
// learned on it and removes it from the switch, freeing its name.
func (sw *Switch) RemovePort(p *Port) error {
	if p.sw != sw {
		return fmt.Errorf("switch %s: remove port %s: not a port of this switch", sw.name, p.name)
	}
	if err := p.SetEndpoints(nil); err != nil {
		return err
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.names[p.name] != p {
		return fmt.Errorf("switch %s: remove port %s: already removed", sw.name, p.name)
	}
	p.removed.Store(true)
	delete(sw.names, p.name)
	old := *sw.ports.Load()
	ports := make([]*Port, 0, len(old))
	for _, q := range old {
		if q != p {
			ports = append(ports, q)
		}
	}
	sw.ports.Store(&ports)
	sw.macs.forget(p)
	return nil
}

// MACs returns how many learned MAC addresses have not aged out.
func (sw *Switch) MACs() int { return sw.macs.count(sw.now(), sw.ageing.Load()) }

// Lookup returns the port the MAC address mac (6 bytes) was last learned
// on, or nil if it is unknown or aged out.
func (sw *Switch) Lookup(mac []byte) *Port {
	if len(mac) != 6 {
		return nil
	}
	p := sw.macs.lookup(macKey(mac), sw.now(), sw.ageing.Load())
	if p != nil && p.removed.Load() {
		return nil
	}
	return p
}

// Learn records mac (6 bytes) as reachable through p now, as if a frame
// from it had arrived on p: e.g. a guest NIC's configured MAC, so the
// first frames to it are not flooded. The entry ages like a learned one.
func (sw *Switch) Learn(mac []byte, p *Port) error {
	if len(mac) != 6 || mac[0]&1 != 0 {
		return fmt.Errorf("switch %s: learn %x: not a unicast MAC address", sw.name, mac)
	}
	if p.sw != sw || p.removed.Load() {
		return fmt.Errorf("switch %s: learn %x: port %s is not on this switch", sw.name, mac, p.name)
	}
	key := macKey(mac)
	if !p.allows(key) {
		return fmt.Errorf("switch %s: learn %x on port %s: the port is bound to other source addresses", sw.name, mac, p.name)
	}
	if !sw.macs.learn(key, p, sw.now(), 0, sw.ageing.Load()) {
		return fmt.Errorf("switch %s: learn %x on port %s: refused (the port is at its learn limit, the address is bound to another port, or its table bucket is full)", sw.name, mac, p.name)
	}
	return nil
}
