package observer

import (
	"fmt"
	"io"
	"strings"
)

// Hist is a log2 histogram of runqueue latency in microseconds: bucket 0
// counts [0,1)µs, bucket b ≥ 1 counts [2^(b-1), 2^b)µs.
type Hist [Buckets]uint32

// Count returns the number of samples.
func (h *Hist) Count() uint64 {
	var n uint64
	for _, c := range h {
		n += uint64(c)
	}
	return n
}

// Add adds o's counts to h.
func (h *Hist) Add(o *Hist) {
	for i := range h {
		h[i] += o[i]
	}
}

// Range returns bucket b's bounds in µs [lo, hi).
func Range(b int) (lo, hi uint64) {
	if b == 0 {
		return 0, 1
	}
	return 1 << (b - 1), 1 << b
}

// Print writes h the way libbpf-tools' runqlat does.
func (h *Hist) Print(w io.Writer) {
	last := -1
	var max uint32
	for i, c := range h {
		if c > 0 {
			last = i
		}
		if c > max {
			max = c
		}
	}
	fmt.Fprintf(w, "%20s : %-10s distribution\n", "usecs", "count")
	for i := 0; i <= last; i++ {
		lo, hi := Range(i)
		n := 0
		if max > 0 {
			n = int(uint64(h[i]) * 40 / uint64(max))
		}
		fmt.Fprintf(w, "%10d -> %-7d : %-10d |%-40s|\n", lo, hi-1, h[i], strings.Repeat("*", n))
	}
}
