package netstack

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// macTableBuckets is the number of buckets of a switch's MAC table; each
// bucket holds macTableWays entries, so a table learns up to 4096 MACs.
const (
	macTableBuckets = 1024
	macTableWays    = 4
	macValid        = uint64(1) << 48
)

// DefaultLearnLimit is how many addresses a port that is not bound to its
// sources (an uplink) may have learned at once; see Port.SetLearnLimit.
const DefaultLearnLimit = 64

// sweepEvery bounds how often a port at its learn limit has the table
// searched for its own expired entries.
const sweepEvery = int64(time.Second)

// macEntry is one learned address. key is the MAC with macValid set, or 0
// when the entry is empty; readers load key, the fields, then key again,
// so a concurrently replaced entry reads as a miss, never as a wrong port.
// A static entry (a bound port's own address) never ages, never moves to
// another port and is never evicted.
type macEntry struct {
	key    atomic.Uint64
	port   atomic.Pointer[Port]
	seen   atomic.Int64
	static atomic.Bool
}

// macTable is a set-associative MAC table. Lookups and refreshes of known
// addresses take no lock; inserting, moving and removing an address takes
// mu, which also guards every port's learned count.
//
// Eviction: a new address takes an empty way, else an expired entry, else
// the oldest entry of its own port; never another port's live entry. So a
// port flooding made-up sources evicts only itself, and learns at most
// its limit (Port.SetLearnLimit). The bucket hash is keyed per table, so
// a guest cannot pick addresses that land in a neighbour's bucket.
type macTable struct {
	mu      sync.Mutex
	seed    uint64
	buckets [macTableBuckets][macTableWays]macEntry
}

func (t *macTable) init() { t.seed = rand.Uint64() | 1 }

// macKey reads a 6-byte MAC into a table key (never 0).
func macKey(b []byte) uint64 {
	_ = b[5]
	return macValid | uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 |
		uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

// keyMAC is macKey's inverse.
func keyMAC(key uint64) [6]byte {
	var m [6]byte
	for i := range m {
		m[i] = byte(key >> (40 - 8*i))
	}
	return m
}

func (t *macTable) bucket(key uint64) *[macTableWays]macEntry {
	h := (key ^ t.seed) * 0x9E3779B97F4A7C15
	return &t.buckets[h>>(64-10)]
}

// lookup returns the port key was last learned on, or nil when it is
// unknown or (unless static) older than ageing nanoseconds at now.
func (t *macTable) lookup(key uint64, now, ageing int64) *Port {
	b := t.bucket(key)
	for i := range b {
		e := &b[i]
		if e.key.Load() != key {
			continue
		}
		p := e.port.Load()
		seen := e.seen.Load()
		static := e.static.Load()
		if e.key.Load() != key || (!static && now-seen > ageing) {
			return nil
		}
		return p
	}
	return nil
}

// learn records that key was seen as a source on p at now and reports
// whether the table knows it there now. A known entry's timestamp is
// refreshed only when it is at least refresh old, so a busy flow does not
// write the shared entry on every frame. A new address, or one moving
// from another port, goes through insert.
func (t *macTable) learn(key uint64, p *Port, now, refresh, ageing int64) bool {
	b := t.bucket(key)
	for i := range b {
		e := &b[i]
		if e.key.Load() == key {
			if e.port.Load() != p {
				break // a move: insert decides
			}
			if !e.static.Load() && now-e.seen.Load() >= refresh {
				e.seen.Store(now)
			}
			return true
		}
	}
	if !t.insert(b, key, p, now, ageing) {
		p.cnt.learnRefused.Add(1)
		return false
	}
	return true
}

// insert learns key on p (new, or moving from another port) and reports
// whether it did: a static entry never moves, a port at its limit learns
// nothing new, and another port's live entry is never evicted.
func (t *macTable) insert(b *[macTableWays]macEntry, key uint64, p *Port, now, ageing int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	var empty, expired, own *macEntry // ways it may reuse
	for i := range b {
		e := &b[i]
		k := e.key.Load()
		switch {
		case k == key:
			q := e.port.Load()
			switch {
			case q == p: // learned by another poller meanwhile
				if !e.static.Load() {
					e.seen.Store(now)
				}
				return true
			case e.static.Load():
				return false // pinned to its bound port
			case !t.roomLocked(p, now, ageing):
				return false
			}
			q.learned.Add(-1)
			p.learned.Add(1)
			e.port.Store(p)
			e.seen.Store(now)
			return true
		case k == 0:
			if empty == nil {
				empty = e
			}
		case e.static.Load():
		case now-e.seen.Load() > ageing:
			if expired == nil || e.seen.Load() < expired.seen.Load() {
				expired = e
			}
		case e.port.Load() == p:
			if own == nil || e.seen.Load() < own.seen.Load() {
				own = e
			}
		}
	}
	victim := empty
	if victim == nil {
		victim = expired
	}
	if victim == nil {
		victim = own
	}
	if victim == nil {
		return false // the bucket holds other ports' live entries only
	}
	// Reusing one of p's own entries leaves its count as it is.
	if reuse := victim.key.Load() != 0 && victim.port.Load() == p; !reuse && !t.roomLocked(p, now, ageing) {
		return false
	}
	t.setLocked(victim, key, p, now, false)
	return true
}

// roomLocked reports whether p may learn one more address, first
// reclaiming its expired entries (at most every sweepEvery) when it is at
// its limit. Called with mu held.
func (t *macTable) roomLocked(p *Port, now, ageing int64) bool {
	limit := p.learnLimit()
	if int(p.learned.Load()) < limit {
		return true
	}
	if last := p.lastSweep.Load(); last != 0 && now-last < sweepEvery {
		return false
	}
	p.lastSweep.Store(max(now, 1))
	for bi := range t.buckets {
		for i := range t.buckets[bi] {
			e := &t.buckets[bi][i]
			if e.key.Load() != 0 && e.port.Load() == p && !e.static.Load() && now-e.seen.Load() > ageing {
				t.clearLocked(e)
			}
		}
	}
	return int(p.learned.Load()) < limit
}

// setLocked makes e the entry of key on p, releasing what it held before.
// Called with mu held.
func (t *macTable) setLocked(e *macEntry, key uint64, p *Port, now int64, static bool) {
	t.clearLocked(e)
	e.port.Store(p)
	e.seen.Store(now)
	e.static.Store(static)
	if !static {
		p.learned.Add(1)
	}
	e.key.Store(key)
}

// clearLocked empties e, keeping its port's learned count right. Called
// with mu held.
func (t *macTable) clearLocked(e *macEntry) {
	if e.key.Load() == 0 {
		return
	}
	if q := e.port.Load(); q != nil && !e.static.Load() {
		q.learned.Add(-1)
	}
	e.key.Store(0)
	e.port.Store(nil)
	e.static.Store(false)
}

// bind pins keys to p as static entries (taking them over from dynamic
// entries, evicting a dynamic entry when a bucket is full) and removes
// every other entry of p. It fails, changing nothing, when a key is
// pinned to another port or its bucket is full of static entries.
func (t *macTable) bind(p *Port, keys []uint64, now int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	slots := make([]*macEntry, len(keys))
	for i, key := range keys {
		b := t.bucket(key)
		var victim *macEntry
		for w := range b {
			e := &b[w]
			k := e.key.Load()
			if k == key {
				if e.static.Load() && e.port.Load() != p {
					return fmt.Errorf("%s is bound to port %s", formatMAC(keyMAC(key)), e.port.Load().name)
				}
				victim = e
				break
			}
			if e.static.Load() || taken(slots[:i], e) || (k != 0 && hasKey(keys, k)) {
				continue // pinned, chosen already, or to be bound itself
			}
			if victim == nil || k == 0 || (victim.key.Load() != 0 && e.seen.Load() < victim.seen.Load()) {
				victim = e
			}
		}
		if victim == nil {
			return fmt.Errorf("%s: the switch's table has no room for another bound address", formatMAC(keyMAC(key)))
		}
		slots[i] = victim
	}
	t.forgetLocked(p)
	for i, key := range keys {
		if e := slots[i]; e.key.Load() != key || !e.static.Load() {
			t.setLocked(e, key, p, now, true)
		}
	}
	return nil
}

// hasKey reports whether keys holds key.
func hasKey(keys []uint64, key uint64) bool {
	for _, k := range keys {
		if k == key {
			return true
		}
	}
	return false
}

// taken reports whether e is among the entries chosen so far.
func taken(chosen []*macEntry, e *macEntry) bool {
	for _, c := range chosen {
		if c == e {
			return true
		}
	}
	return false
}

// forget removes every entry pointing at p.
func (t *macTable) forget(p *Port) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forgetLocked(p)
}

func (t *macTable) forgetLocked(p *Port) {
	for bi := range t.buckets {
		for i := range t.buckets[bi] {
			e := &t.buckets[bi][i]
			if e.key.Load() != 0 && e.port.Load() == p {
				t.clearLocked(e)
			}
		}
	}
}

// count returns how many entries are static or younger than ageing at
// now.
func (t *macTable) count(now, ageing int64) int {
	n := 0
	for bi := range t.buckets {
		for i := range t.buckets[bi] {
			e := &t.buckets[bi][i]
			if e.key.Load() != 0 && (e.static.Load() || now-e.seen.Load() <= ageing) {
				n++
			}
		}
	}
	return n
}

func formatMAC(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}
