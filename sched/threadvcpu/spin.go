package threadvcpu

import (
	"time"

	"github.com/colibrivm/colibri/sched"
)

// spin runs n iterations of a dependent multiply-add chain: CPU work the
// compiler cannot remove, since the result feeds the next call.
func spin(n int, x uint64) uint64 {
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

// Calibrate measures the spin loop on the calling thread and returns the
// iterations per microsecond (the best of a few 2ms runs, so that
// interference only makes work take longer in wall time, never shorter).
func Calibrate() int {
	const n = 200000
	best := time.Duration(1 << 62)
	var x uint64
	for r := 0; r < 5; r++ {
		t0 := sched.Nanotime()
		x = spin(n, x)
		if d := time.Duration(sched.Nanotime() - t0); d < best {
			best = d
		}
	}
	per := int(float64(n) / (float64(best) / 1e3))
	if per < 1 || x == 42 { // x keeps the loop alive
		per = 1
	}
	return per
}
