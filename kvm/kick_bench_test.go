package kvm_test

import (
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/colibrivm/colibri/kvm"
	"golang.org/x/sys/unix"
)

// BenchmarkKVMKickToExit measures how long a kick (immediate_exit + tgkill
// of the vCPU thread) takes to bring a vCPU spinning in the guest out of
// KVM_RUN, and reports p50/p99 in µs. Run it where KVM works, e.g.
//
//	go test -c -o /tmp/kvm.test ./kvm
//	scripts/kvm-sandbox /tmp/kvm.test -test.run X -test.bench KVMKick -test.benchtime 2000x
func BenchmarkKVMKickToExit(b *testing.B) {
	vm := spinVM(b)

	type vcpu struct {
		cpu *kvm.VCPU
		tid int
	}
	ready := make(chan vcpu, 1)
	exited := make(chan time.Time, 1)
	resume := make(chan bool)
	go func() {
		runtime.LockOSThread()
		cpu, err := vm.CreateVCPU(0)
		if err != nil {
			b.Error(err)
			close(ready)
			return
		}
		defer cpu.Close()
		startReal(cpu)
		ready <- vcpu{cpu, unix.Gettid()}
		for <-resume {
			if _, err := cpu.Run(); err != nil {
				b.Error(err)
				return
			}
			exited <- time.Now()
			cpu.SetImmediateExit(false)
		}
	}()
	v, ok := <-ready
	if !ok {
		b.Fatal("vCPU setup failed")
	}
	defer close(resume)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resume <- true
		time.Sleep(200 * time.Microsecond) // let it enter the guest and spin
		start := time.Now()
		v.cpu.SetImmediateExit(true)
		unix.Tgkill(unix.Getpid(), v.tid, kvm.KickSignal)
		lat = append(lat, (<-exited).Sub(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(0, "ns/op")
}
