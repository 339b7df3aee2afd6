package threadvcpu

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/sched"
	"github.com/colibrivm/colibri/sched/latency"
)

// cpuWatch is work that spins and records when it first runs on a CPU
// other than the last one it saw (getcpu after every ~1µs chunk).
type cpuWatch struct {
	cpu     atomic.Int32
	arrived atomic.Int64
	x       uint64
}

func (w *cpuWatch) Run(g *Guest) {
	for !g.Exit() {
		w.x = spin(100, w.x)
		var cpu uint32
		unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), 0, 0)
		if int32(cpu) != w.cpu.Load() {
			w.arrived.Store(g.Now())
			w.cpu.Store(int32(cpu))
		}
	}
}

// BenchmarkAffinityMove moves a spinning thread vCPU between CPUs 0 and 1
// with SetAffinity and reports the time from the call to the thread
// computing on its new CPU, as the thread itself sees it (p50/p99).
func BenchmarkAffinityMove(b *testing.B) {
	if runtime.NumCPU() < 2 {
		b.Fatalf("needs 2 CPUs, have %d", runtime.NumCPU())
	}
	w := &cpuWatch{}
	w.cpu.Store(-1)
	v, err := Start(context.Background(), Config{Work: w, CPUs: []int{1}})
	if err != nil {
		b.Fatal(err)
	}
	defer v.Stop()
	for w.cpu.Load() != 1 {
		time.Sleep(100 * time.Microsecond)
	}
	var h latency.Histogram
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cpu := int32(i % 2)
		t0 := sched.Nanotime()
		if err := v.SetAffinity([]int{int(cpu)}); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(time.Second)
		for w.cpu.Load() != cpu {
			if time.Now().After(deadline) {
				b.Fatalf("thread not on CPU %d 1s after SetAffinity", cpu)
			}
			time.Sleep(20 * time.Microsecond)
		}
		h.RecordNanos(w.arrived.Load() - t0)
	}
	b.ReportMetric(float64(h.Quantile(0.5))/1e3, "move-p50-µs")
	b.ReportMetric(float64(h.Quantile(0.99))/1e3, "move-p99-µs")
}
