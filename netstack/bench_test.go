package netstack_test

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/netstack/netstacktest"
	"github.com/colibrivm/colibri/vmm/virtio/netdev/netdevtest"
)

// benchCore is the core the benchmarks' one poller is pinned to.
const benchCore = 1

var benchSizes = []int{64, 1500}

// BenchmarkSwitch: a synthetic in-memory source and sink through the
// switch (learned unicast) and one pinned poller.
func BenchmarkSwitch(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			gen, err := netstacktest.NewGenerator(netstacktest.Frame(macB, macA, size))
			if err != nil {
				b.Fatal(err)
			}
			defer gen.Close()
			sink, err := netstacktest.NewSink()
			if err != nil {
				b.Fatal(err)
			}
			defer sink.Close()
			b.ReportAllocs()
			netstacktest.Throughput(b, netstack.Config{PollerCores: []int{benchCore}}, gen, sink, macB[:])
		})
	}
}

// BenchmarkTAP is the kernel baseline for the same frames: generator ->
// switch -> tap A (write with vnet header) -> Linux bridge -> tap B (read
// with vnet header) -> switch -> sink, all on one poller.
func BenchmarkTAP(b *testing.B) {
	needTAP(b)
	br := tapName(b, "br")
	if out, err := exec.Command("ip", "link", "add", br, "type", "bridge").CombinedOutput(); err != nil {
		b.Skipf("no Linux bridge for the TAP baseline: %v %s", err, out)
	}
	defer exec.Command("ip", "link", "del", br).Run()
	ta := openTAP(b, tapName(b, "A"))
	tb := openTAP(b, tapName(b, "B"))
	for _, cmd := range [][]string{
		{"link", "set", ta.Name(), "master", br},
		{"link", "set", tb.Name(), "master", br},
		{"link", "set", br, "up"},
	} {
		if out, err := exec.Command("ip", cmd...).CombinedOutput(); err != nil {
			b.Fatalf("ip %v: %v %s", cmd, err, out)
		}
	}
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			gen, err := netstacktest.NewGenerator(netstacktest.Frame(macB, macA, size))
			if err != nil {
				b.Fatal(err)
			}
			defer gen.Close()
			sink, err := netstacktest.NewSink()
			if err != nil {
				b.Fatal(err)
			}
			defer sink.Close()
			sw1, sw2 := netstack.NewSwitch("in"), netstack.NewSwitch("out")
			pg, _ := sw1.AddPort("gen")
			pa, _ := sw1.AddPort("tapA")
			pb, _ := sw2.AddPort("tapB")
			ps, _ := sw2.AddPort("sink")
			_ = pg.SetEndpoints([]netstack.Endpoint{gen})
			_ = pa.SetEndpoints([]netstack.Endpoint{ta})
			_ = pb.SetEndpoints([]netstack.Endpoint{tb})
			_ = ps.SetEndpoints([]netstack.Endpoint{sink})
			_ = sw1.Learn(macB[:], pa)
			_ = sw2.Learn(macB[:], ps)
			st, err := netstack.New(netstack.Config{PollerCores: []int{benchCore}})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			defer pa.SetEndpoints(nil)
			defer pb.SetEndpoints(nil)
			_ = st.AddSwitch(sw1)
			_ = st.AddSwitch(sw2)
			if err := st.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			gen.Send(1000)
			_ = netstacktest.WaitDelivered(sink, 900, time.Second)
			time.Sleep(10 * time.Millisecond)
			base := sink.Delivered()
			b.ResetTimer()
			start := time.Now()
			gen.Send(b.N)
			// The kernel may drop: wait for the last frame, or for the
			// count to stop moving, and rate what arrived.
			last, lastAt := base, time.Now()
			for last < base+uint64(b.N) && time.Since(lastAt) < 100*time.Millisecond {
				time.Sleep(50 * time.Microsecond)
				if n := sink.Delivered(); n != last {
					last, lastAt = n, time.Now()
				}
			}
			b.StopTimer()
			got := last - base
			if got == 0 {
				out, _ := exec.Command("ip", "-s", "-d", "link").CombinedOutput()
				b.Fatalf("no frame came through the taps\n%s\n%s", statsOf(st), out)
			}
			b.ReportMetric(float64(got)/lastAt.Sub(start).Seconds()/1e6, "Mpps")
			b.ReportMetric(100*float64(max(int64(b.N)-int64(got), 0))/float64(b.N), "%lost")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkWakeup: the poller is asleep in epoll_wait; one frame is made
// available and its endpoint kicked. Reports the time from the kick to
// the poller returning from epoll_wait (wake-us) and to the frame being
// delivered to the sink (deliver-us), as medians and p99s.
func BenchmarkWakeup(b *testing.B) {
	gen, err := netstacktest.NewGenerator(netstacktest.Frame(macB, macA, 64))
	if err != nil {
		b.Fatal(err)
	}
	defer gen.Close()
	sink, err := netstacktest.NewSink()
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	sw := netstack.NewSwitch("sw0")
	pg, _ := sw.AddPort("gen")
	ps, _ := sw.AddPort("sink")
	_ = pg.SetEndpoints([]netstack.Endpoint{gen})
	_ = ps.SetEndpoints([]netstack.Endpoint{sink})
	_ = sw.Learn(macB[:], ps)
	epoch := time.Now()
	var wokeAt atomic.Int64
	st, err := netstack.New(netstack.Config{
		PollerCores:  []int{benchCore},
		IdleAfter:    20 * time.Microsecond,
		MaxIdleAfter: 20 * time.Microsecond, // every wait a sleep
		OnWake:       func(int) { wokeAt.Store(int64(time.Since(epoch))) },
	})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	_ = st.AddSwitch(sw)
	if err := st.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	wake := make([]time.Duration, 0, b.N)
	deliver := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		for {
			ps := st.Stats().Pollers[0]
			if ps.Sleeps > ps.Wakeups {
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
		time.Sleep(100 * time.Microsecond) // into epoll_wait
		b.StartTimer()
		t0 := int64(time.Since(epoch))
		gen.Send(1)
		for sink.Delivered() < uint64(i+1) {
			runtime.Gosched()
		}
		t2 := int64(time.Since(epoch))
		wake = append(wake, time.Duration(wokeAt.Load()-t0))
		deliver = append(deliver, time.Duration(t2-t0))
	}
	b.StopTimer()
	if w := st.Stats().Pollers[0].Wakeups; w < uint64(b.N) {
		b.Fatalf("%d wakeups for %d kicks", w, b.N)
	}
	q := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[int(p*float64(len(d)-1))]) / 1e3
	}
	b.ReportMetric(q(wake, 0.5), "wake-us")
	b.ReportMetric(q(wake, 0.99), "wake-p99-us")
	b.ReportMetric(q(deliver, 0.5), "deliver-us")
	b.ReportMetric(q(deliver, 0.99), "deliver-p99-us")
}

func statsOf(st *netstack.Stack) string {
	var sb strings.Builder
	_ = st.Stats().WriteText(&sb)
	return sb.String()
}

// BenchmarkPollerVirtio is the poller's own cost between real virtio
// rings, apart from the drivers that feed it (which, on a 2-core machine,
// share the one core the poller does not have and limit
// BenchmarkDatapathVirtio in cmd/colibri): a synthetic driver queues up to
// 128 frames in guest A's TX ring, the switching code then runs
// synchronously on this goroutine until they are all in guest B's RX ring
// (TX completion, switching, mergeable-buffer fill, used-ring updates,
// interrupt decisions), and only that part is timed; B's driver reposts
// its buffers between rounds, untimed. Mpps is frames per second of
// poller time: what one poller core moves when the guests keep up. It
// uses vmm/virtio/netdev's synthetic driver (a test-only import).
//
//	go test -run X -bench PollerVirtio ./netstack
func BenchmarkPollerVirtio(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			src, dst := netdevtest.NewPair(b, 2048, macA, macB)
			_, pa := netstacktest.TwoPortSwitch(b, src.Pair, dst.Pair, macB[:])
			sp := netstack.NewSyncPoller(64)
			frame := netstacktest.Frame(macB, macA, size)
			batch := make([][]byte, 128)
			for i := range batch {
				batch[i] = frame
			}
			b.ReportAllocs()
			b.ResetTimer()
			var busy time.Duration
			for done := 0; done < b.N; {
				n := src.Send(batch[:min(len(batch), b.N-done)]...)
				t0 := time.Now()
				for moved := 0; moved < n; {
					moved += int(sp.Poll(pa))
				}
				busy += time.Since(t0)
				if got := dst.Receive(func([]byte) {}); got != n {
					b.Fatalf("guest B received %d frames of %d", got, n)
				}
				done += n
			}
			b.ReportMetric(float64(b.N)/busy.Seconds()/1e6, "Mpps")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkPollerIdle is the cost of one pass that finds nothing: a
// poller pinned to its core that never sleeps (IdleAfter < 0) over four
// idle virtio-net queue pairs (four synthetic guests, each a port of one
// switch), timed from its own pass counter. ns/op is per pass: how
// late, at worst, a busy-polling poller sees a guest's frame.
//
//	go test -run X -bench PollerIdle ./netstack
func BenchmarkPollerIdle(b *testing.B) {
	sw := netstack.NewSwitch("idle")
	for i := range 2 {
		a, c := netdevtest.NewPair(b, 2048, [6]byte{0x52, 0x54, 0, 0, byte(i), 0x0a}, [6]byte{0x52, 0x54, 0, 0, byte(i), 0x0b})
		for j, d := range []*netdevtest.Driver{a, c} {
			p, err := sw.AddPort(fmt.Sprintf("g%d%d", i, j))
			if err != nil {
				b.Fatal(err)
			}
			if err := p.SetEndpoints([]netstack.Endpoint{d.Pair}); err != nil {
				b.Fatal(err)
			}
		}
	}
	st := startStack(b, netstack.Config{PollerCores: []int{benchCore}, IdleAfter: -1}, sw)
	time.Sleep(10 * time.Millisecond)
	base := st.Stats().Pollers[0].Polls
	b.ResetTimer()
	start := time.Now()
	for st.Stats().Pollers[0].Polls-base < uint64(b.N) {
		time.Sleep(200 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	got := st.Stats().Pollers[0].Polls - base
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(got), "ns/pass")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPollerContention: two pollers, pinned to CPUs 0 and 1, both
// delivering into one endpoint, so they meet at its lock. one-sink: each
// drains an in-memory source whose frames all go to the sink; Mpps is what
// reached it. mixed: poller 1 also drains a second source whose frames go
// to a sink of its own, which nobody else delivers to; private-Mpps is
// that sink's rate while the first one is fought over (a poller waiting
// for one destination's lock serves nothing else meanwhile). It needs two
// CPUs.
//
//	go test -run X -bench PollerContention ./netstack
func BenchmarkPollerContention(b *testing.B) {
	if runtime.NumCPU() < 2 {
		b.Skip("needs 2 CPUs")
	}
	for _, mode := range []string{"one-sink", "mixed"} {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%s/%dB", mode, size), func(b *testing.B) { benchContention(b, mode == "mixed", size) })
		}
	}
}

func benchContention(b *testing.B, mixed bool, size int) {
	sw := netstack.NewSwitch("contention")
	newGen := func(name string, dst [6]byte) *netstacktest.Generator {
		g, err := netstacktest.NewGenerator(netstacktest.Frame(dst, macA, size))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { g.Close() })
		p, _ := sw.AddPort(name)
		if err := p.SetEndpoints([]netstack.Endpoint{g}); err != nil {
			b.Fatal(err)
		}
		return g
	}
	newSink := func(name string, mac [6]byte) *netstacktest.Sink {
		k, err := netstacktest.NewSink()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { k.Close() })
		p, _ := sw.AddPort(name)
		if err := p.SetEndpoints([]netstack.Endpoint{k}); err != nil {
			b.Fatal(err)
		}
		if err := sw.Learn(mac[:], p); err != nil {
			b.Fatal(err)
		}
		return k
	}
	// Endpoints go to the pollers in turn: gen0 to 0, gen1 to 1, the
	// sink to 0, gen2 (mixed) to 1.
	gens := []*netstacktest.Generator{newGen("gen0", macB), newGen("gen1", macB)}
	sink := newSink("sink", macB)
	var own *netstacktest.Sink
	if mixed {
		gens = append(gens, newGen("gen2", macC))
		own = newSink("own", macC)
	}
	st := startStack(b, netstack.Config{PollerCores: []int{0, 1}}, sw)
	for _, g := range gens {
		g.Send(1000)
	}
	if err := netstacktest.WaitDelivered(sink, 2000, 2*time.Second); err != nil {
		b.Fatal(err)
	}
	base := sink.Delivered()
	var ownBase uint64
	if own != nil {
		if err := netstacktest.WaitDelivered(own, 1000, 2*time.Second); err != nil {
			b.Fatal(err)
		}
		ownBase = own.Delivered()
	}
	n := uint64(b.N / 2)
	b.ResetTimer()
	start := time.Now()
	for _, g := range gens {
		g.Send(int(n))
	}
	var ownDone time.Duration
	if own != nil {
		if err := netstacktest.WaitDelivered(own, ownBase+n, 2*time.Second); err != nil {
			b.Fatalf("%v\n%s", err, statsOf(st))
		}
		ownDone = time.Since(start)
	}
	if err := netstacktest.WaitDelivered(sink, base+2*n, 2*time.Second); err != nil {
		b.Fatalf("%v\n%s", err, statsOf(st))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(2*n)/elapsed.Seconds()/1e6, "Mpps")
	if own != nil {
		b.ReportMetric(float64(n)/ownDone.Seconds()/1e6, "private-Mpps")
	}
	b.ReportMetric(0, "ns/op")
}
