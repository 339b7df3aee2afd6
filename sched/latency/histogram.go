// Package latency records latencies in a log-linear histogram: exact below
// 64ns, then 32 buckets per power of two (≤ 3.2% relative error), with
// lock-free recording and reading.
package latency

import (
	"math/bits"
	"sync/atomic"
	"time"
)

const (
	subBits = 5
	sub     = 1 << subBits // buckets per power of two
	linear  = 2 * sub      // values below this are exact
	maxExp  = 40           // up to 2^46 ns ≈ 19.5 hours
	buckets = linear + maxExp*sub
)

// Histogram counts durations. All methods are safe for concurrent use
// (counters are atomic; a reader racing writers sees a nearly consistent
// snapshot). The zero value is empty and ready.
type Histogram struct {
	counts [buckets]atomic.Uint64
	sum    atomic.Uint64 // ns
	max    atomic.Uint64 // ns
}

func index(v uint64) int {
	if v < linear {
		return int(v)
	}
	shift := bits.Len64(v) - (subBits + 1)
	if shift > maxExp {
		return buckets - 1
	}
	return linear + (shift-1)*sub + int(v>>uint(shift)) - sub
}

// lower returns the smallest value of bucket i.
func lower(i int) uint64 {
	if i < linear {
		return uint64(i)
	}
	shift := (i-linear)/sub + 1
	top := uint64((i-linear)%sub + sub)
	return top << uint(shift)
}

// Record adds one duration (negative counts as 0).
func (h *Histogram) Record(d time.Duration) { h.RecordNanos(int64(d)) }

// RecordNanos adds one duration in nanoseconds.
func (h *Histogram) RecordNanos(ns int64) {
	if ns < 0 {
		ns = 0
	}
	v := uint64(ns)
	h.counts[index(v)].Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Count returns the number of recorded durations.
func (h *Histogram) Count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// Mean returns the mean duration, 0 if empty.
func (h *Histogram) Mean() time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// Max returns the largest recorded duration.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Quantile returns the q-quantile (0 ≤ q ≤ 1) as the midpoint of its
// bucket; 0 if empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	var c [buckets]uint64
	var n uint64
	for i := range h.counts {
		c[i] = h.counts[i].Load()
		n += c[i]
	}
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	var seen uint64
	for i := range c {
		seen += c[i]
		if seen >= rank {
			lo := lower(i)
			if i+1 < buckets {
				lo = (lo + lower(i+1) - 1) / 2
			}
			if m := h.max.Load(); lo > m {
				lo = m
			}
			return time.Duration(lo)
		}
	}
	return h.Max()
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.sum.Add(o.sum.Load())
	for {
		m, om := h.max.Load(), o.max.Load()
		if om <= m || h.max.CompareAndSwap(m, om) {
			return
		}
	}
}
