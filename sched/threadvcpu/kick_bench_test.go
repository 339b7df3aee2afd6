package threadvcpu

import (
	"context"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/sched"
	"github.com/colibrivm/colibri/sched/latency"
)

// benchPark parks and unparks v b.N times from a thread pinned to CPU 0
// (waiting, before each park, for running to change, or 100µs if nil)
// and reports kick→parked and unpark→running latency percentiles.
func benchPark(b *testing.B, v *VCPU, running func() uint64) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set, old unix.CPUSet
	_ = unix.SchedGetaffinity(0, &old)
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		b.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &old)
	var park, resume latency.Histogram
	for i := 0; i < b.N; i++ {
		if running != nil {
			n := running()
			for running() == n {
			}
		} else {
			// Give the thread time to go back to sleep.
			for t := sched.Nanotime() + 100e3; sched.Nanotime() < t; {
			}
		}
		t0 := sched.Nanotime()
		if err := v.Park(); err != nil {
			b.Fatal(err)
		}
		var at int64
		for at = v.ParkedSince(); at == 0; at = v.ParkedSince() {
		}
		park.RecordNanos(at - t0)
		t1 := sched.Nanotime()
		if err := v.Unpark(); err != nil {
			b.Fatal(err)
		}
		for v.ResumedAt() < t1 {
		}
		resume.RecordNanos(v.ResumedAt() - t1)
	}
	b.ReportMetric(float64(park.Quantile(0.5))/1e3, "park-p50-µs")
	b.ReportMetric(float64(park.Quantile(0.99))/1e3, "park-p99-µs")
	b.ReportMetric(float64(resume.Quantile(0.5))/1e3, "resume-p50-µs")
	b.ReportMetric(float64(resume.Quantile(0.99))/1e3, "resume-p99-µs")
}

// BenchmarkKickToParked/spinning: the vCPU computes on CPU 1 and sees the
// park flag between 1µs chunks (the signal arrives too). /sleeping: the
// vCPU sleeps in clock_nanosleep and only the signal gets it out, as it
// gets a real vCPU out of KVM_RUN. Resume is unpark → the thread is back
// from its futex wait.
func BenchmarkKickToParked(b *testing.B) {
	b.Run("spinning", func(b *testing.B) {
		w := &Spin{ItersPerUS: Calibrate()}
		v, err := Start(context.Background(), Config{Work: w, CPUs: []int{1}})
		if err != nil {
			b.Fatal(err)
		}
		defer v.Stop()
		benchPark(b, v, w.Chunks)
	})
	b.Run("sleeping", func(b *testing.B) {
		var h latency.Histogram
		srv := &Server{Latency: &h} // no load: sleeps until kicked
		v, err := Start(context.Background(), Config{Work: srv, CPUs: []int{1}})
		if err != nil {
			b.Fatal(err)
		}
		defer v.Stop()
		time.Sleep(time.Millisecond)
		benchPark(b, v, nil)
	})
}
