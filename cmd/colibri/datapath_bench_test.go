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

	"golang.org/x/sys/unix"

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
// frame is counted. Besides Mpps it reports what a guest would pay (TX
// kicks and RX interrupts per 1,000 frames) and how busy the poller was
// (busy%: passes that found frames; frames/pass in those).
//
// Two kinds of drivers:
//
//   - drivers=copy: as a guest's: A's driver copies each frame into its
//     buffer, B's copies each out, on two goroutines that share the other
//     core (on a 2-core machine they, not the poller, set the rate);
//
//   - drivers=cheap: one goroutine locked to CPU 0 drives both rings, A's
//     buffers hold the frame already (written once) and B's frames are
//     reposted unread: the poller's rate per core when the guests cost
//     next to nothing.
//
//     go test -run X -bench DatapathVirtio ./cmd/colibri
func BenchmarkDatapathVirtio(b *testing.B) {
	for _, cheap := range []bool{false, true} {
		kind := "copy"
		if cheap {
			kind = "cheap"
		}
		for _, size := range []int{64, 1500} {
			b.Run(fmt.Sprintf("drivers=%s/%dB", kind, size), func(b *testing.B) { benchDatapathVirtio(b, size, cheap) })
		}
	}
}

func benchDatapathVirtio(b *testing.B, size int, cheap bool) {
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
	frame := netstacktest.Frame(macB, macA, size)
	fail := func(got, n uint64) {
		var sb strings.Builder
		_ = st.Stats().WriteText(&sb)
		b.Fatalf("%d of %d frames arrived in 10 s\n%s", got, n, &sb)
	}

	var send func(n int)
	if cheap {
		if err := a.Prepare(frame); err != nil {
			b.Fatal(err)
		}
		if runtime.NumCPU() > 1 {
			runtime.LockOSThread()
			var one, all unix.CPUSet
			_ = unix.SchedGetaffinity(0, &all)
			one.Set(0)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				b.Fatal(err)
			}
			defer func() {
				_ = unix.SchedSetaffinity(0, &all)
				runtime.UnlockOSThread()
			}()
		}
		send = func(n int) {
			var sent, received uint64
			deadline := time.Now().Add(10 * time.Second)
			for spins := 0; received < uint64(n); spins++ {
				got := dst.DiscardSingles()
				received += uint64(got)
				want := min(32, uint64(n)-sent, 192-(sent-received))
				if want > 0 {
					sent += uint64(a.SendPrepared(int(want)))
				}
				if spins&1023 == 0 && time.Now().After(deadline) {
					fail(received, uint64(n))
				}
			}
		}
	} else {
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
		batch := make([][]byte, 32)
		for i := range batch {
			batch[i] = frame
		}
		send = func(n int) {
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
					fail(received.Load()-base, uint64(n))
				}
			}
		}
	}
	send(1000) // warm up: pages, poller
	kicks, irqs := a.Kicks.Load(), dst.RxInterrupts.Load()
	p0 := st.Stats().Pollers[0]
	b.ResetTimer()
	start := time.Now()
	send(b.N)
	elapsed := time.Since(start)
	b.StopTimer()
	p1 := st.Stats().Pollers[0]
	b.ReportMetric(float64(b.N)/elapsed.Seconds()/1e6, "Mpps")
	b.ReportMetric(float64(a.Kicks.Load()-kicks)*1000/float64(b.N), "kicks/kpkt")
	b.ReportMetric(float64(dst.RxInterrupts.Load()-irqs)*1000/float64(b.N), "rx-irqs/kpkt")
	if polls := p1.Polls - p0.Polls; polls > 0 {
		busy := polls - (p1.EmptyPolls - p0.EmptyPolls)
		b.ReportMetric(100*float64(busy)/float64(polls), "busy%")
		if busy > 0 {
			b.ReportMetric(float64(p1.Frames-p0.Frames)/float64(busy), "frames/pass")
		}
	}
	b.ReportMetric(0, "ns/op")
}
