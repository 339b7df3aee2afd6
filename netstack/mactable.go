package netstack

import (
	"sync"
	"sync/atomic"
)

// macTableBuckets is the number of buckets of a switch's MAC table; each
// bucket holds macTableWays entries, so a table learns up to 4096 MACs.
const (
	macTableBuckets = 1024
	macTableWays    = 4
	macValid        = uint64(1) << 48
)

// macEntry is one learned address. key is the MAC with macValid set, or 0
// when the entry is empty; readers load key, port, then key again, so a
// concurrently replaced entry reads as a miss, never as a wrong port.
type macEntry struct {
	key  atomic.Uint64
	port atomic.Pointer[Port]
	seen atomic.Int64
}

// macTable is a set-associative MAC table. Lookups and refreshes of known
// addresses take no lock; inserting a new address takes mu.
type macTable struct {
	mu      sync.Mutex
	buckets [macTableBuckets][macTableWays]macEntry
}

// macKey reads a 6-byte MAC into a table key (never 0).
func macKey(b []byte) uint64 {
	_ = b[5]
	return macValid | uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 |
		uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

func (t *macTable) bucket(key uint64) *[macTableWays]macEntry {
	h := key * 0x9E3779B97F4A7C15
	return &t.buckets[h>>(64-10)]
}

// lookup returns the port key was last learned on, or nil when it is
// unknown or older than ageing nanoseconds at now.
func (t *macTable) lookup(key uint64, now, ageing int64) *Port {
	b := t.bucket(key)
	for i := range b {
		e := &b[i]
		if e.key.Load() != key {
			continue
		}
		p := e.port.Load()
		seen := e.seen.Load()
		if e.key.Load() != key || now-seen > ageing {
			return nil
		}
		return p
	}
	return nil
}

// learn records that key was seen as a source on p at now. A known entry's
// timestamp is refreshed only when it is at least refresh old, so a busy
// flow does not write the shared entry on every frame.
func (t *macTable) learn(key uint64, p *Port, now, refresh int64) {
	b := t.bucket(key)
	for i := range b {
		e := &b[i]
		if e.key.Load() == key {
			if e.port.Load() != p {
				e.port.Store(p)
			}
			if now-e.seen.Load() >= refresh {
				e.seen.Store(now)
			}
			return
		}
	}
	t.insert(b, key, p, now)
}

func (t *macTable) insert(b *[macTableWays]macEntry, key uint64, p *Port, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	victim := &b[0]
	for i := range b {
		e := &b[i]
		k := e.key.Load()
		if k == key { // learned by another poller meanwhile
			e.port.Store(p)
			e.seen.Store(now)
			return
		}
		if k == 0 {
			victim = e
			break
		}
		if e.seen.Load() < victim.seen.Load() {
			victim = e
		}
	}
	victim.key.Store(0)
	victim.port.Store(p)
	victim.seen.Store(now)
	victim.key.Store(key)
}

// forget removes every entry pointing at p.
func (t *macTable) forget(p *Port) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for bi := range t.buckets {
		for i := range t.buckets[bi] {
			e := &t.buckets[bi][i]
			if e.key.Load() != 0 && e.port.Load() == p {
				e.key.Store(0)
				e.port.Store(nil)
			}
		}
	}
}

// count returns how many entries are younger than ageing at now.
func (t *macTable) count(now, ageing int64) int {
	n := 0
	for bi := range t.buckets {
		for i := range t.buckets[bi] {
			e := &t.buckets[bi][i]
			if e.key.Load() != 0 && now-e.seen.Load() <= ageing {
				n++
			}
		}
	}
	return n
}
