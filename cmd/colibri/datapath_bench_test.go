package main

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/netstack/netstacktest"
	"github.com/colibrivm/colibri/vmm/virtio/netdev/netdevtest"
)

// BenchmarkDatapathVirtio is netstack's forwarding rate between real
// virtio-net rings, without KVM: a synthetic driver fills guest A's TX
// ring in a memory region, one poller (pinned to CPU 1 when there is one)
// switches the frames into guest B's RX ring, and a second synthetic
// driver drains it and reposts the buffers. The sender keeps at most 192
// frames in flight (B's ring holds 256), so nothing is dropped and every
// frame is counted. Besides Mpps it reports what a guest would pay:
// TX kicks and RX interrupts per 1,000 frames.
//
//	go test -run X -bench DatapathVirtio ./cmd/colibri
func BenchmarkDatapathVirtio(b *testing.B) {
	for _, size := range []int{64, 1500} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) { benchDatapathVirtio(b, size) })
	}
}

func benchDatapathVirtio(b *testing.B, size int) {
	macA := [6]byte{0x52, 0x54, 0, 0, 0, 0x0a}
	macB := [6]byte{0x52, 0x54, 0, 0, 0, 0x0b}
	a, dst := netdevtest.NewPair(b, 2048, macA, macB)
	cfg := netstack.Config{}
	if runtime.NumCPU() > 1 {
		cfg.PollerCores = []int{1}
	}
	st, err := netstack.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	sw, _ := netstacktest.TwoPortSwitch(b, a.Pair, dst.Pair, macB[:])
	if err := st.AddSwitch(sw); err != nil {
		b.Fatal(err)
	}
	if err := st.Start(context.Background()); err != nil {
		b.Fatal(err)
	}

	// B's driver: drain and repost until told to stop.
	var received atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := dst.Receive(func([]byte) {}); n > 0 {
				received.Add(uint64(n))
			} else {
				runtime.Gosched()
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	frame := netstacktest.Frame(macB, macA, size)
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = frame
	}
	send := func(n int) {
		base := received.Load()
		target := base + uint64(n)
		sent := uint64(0)
		deadline := time.Now().Add(10 * time.Second)
		for received.Load() < target {
			inFlight := base + sent - received.Load()
			if want := min(uint64(len(batch)), uint64(n)-sent, 192-min(inFlight, 192)); want > 0 {
				sent += uint64(a.Send(batch[:want]...))
			} else {
				runtime.Gosched()
			}
			if time.Now().After(deadline) {
				var sb strings.Builder
				_ = st.Stats().WriteText(&sb)
				b.Fatalf("%d of %d frames arrived in 10 s\n%s", received.Load()-base, n, &sb)
			}
		}
	}
	send(1000) // warm up: pages, poller
	kicks, irqs := a.Kicks.Load(), dst.RxInterrupts.Load()
	b.ResetTimer()
	start := time.Now()
	send(b.N)
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds()/1e6, "Mpps")
	b.ReportMetric(float64(a.Kicks.Load()-kicks)*1000/float64(b.N), "kicks/kpkt")
	b.ReportMetric(float64(dst.RxInterrupts.Load()-irqs)*1000/float64(b.N), "rx-irqs/kpkt")
	b.ReportMetric(0, "ns/op")
}
