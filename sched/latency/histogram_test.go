package latency

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestIndexLowerRoundTrip(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<24; v += 1 + v/7 {
		i := index(v)
		if i < prev {
			t.Fatalf("index not monotonic at %d", v)
		}
		prev = i
		lo, hi := lower(i), lower(i+1)
		if v < lo || v >= hi {
			t.Fatalf("value %d in bucket %d = [%d,%d)", v, i, lo, hi)
		}
		if v >= linear && float64(hi-lo)/float64(lo) > 1.0/sub+1e-9 {
			t.Fatalf("bucket %d too wide: [%d,%d)", i, lo, hi)
		}
	}
}

func TestQuantilesMatchSorted(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]int64, 100000)
	for i := range vals {
		vals[i] = int64(r.ExpFloat64() * 20000)
		h.RecordNanos(vals[i])
	}
	sort.Slice(vals, func(a, b int) bool { return vals[a] < vals[b] })
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := float64(vals[int(q*float64(len(vals)))-1])
		got := float64(h.Quantile(q))
		if got < want*0.96 || got > want*1.04 {
			t.Errorf("q%.3f = %v, exact %v", q, time.Duration(got), time.Duration(want))
		}
	}
	if h.Count() != uint64(len(vals)) {
		t.Fatalf("count %d", h.Count())
	}
	var m Histogram
	m.Merge(&h)
	m.Merge(&h)
	if m.Count() != 2*h.Count() || m.Quantile(0.5) != h.Quantile(0.5) || m.Max() != h.Max() {
		t.Fatalf("merge: count %d p50 %v max %v", m.Count(), m.Quantile(0.5), m.Max())
	}
}
