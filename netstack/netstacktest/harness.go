package netstacktest

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/colibrivm/colibri/netstack"
)

// Source is an Endpoint a benchmark can load with frames (a Generator, or
// a synthetic guest driver filling a virtio TX ring).
type Source interface {
	netstack.Endpoint
	// Send makes n more frames available for Transmit, kicking the
	// endpoint's WaitFD if it is armed.
	Send(n int)
}

// Counter is an Endpoint that counts the frames delivered to it (a Sink,
// or a synthetic guest draining a virtio RX ring).
type Counter interface {
	netstack.Endpoint
	// Delivered returns how many frames were delivered and flushed.
	Delivered() uint64
}

// WaitDelivered waits until c has received want frames in total. It fails
// if the count stops moving for stall.
func WaitDelivered(c Counter, want uint64, stall time.Duration) error {
	last, lastMove := c.Delivered(), time.Now()
	for last < want {
		time.Sleep(20 * time.Microsecond)
		n := c.Delivered()
		if n != last {
			last, lastMove = n, time.Now()
			continue
		}
		if time.Since(lastMove) > stall {
			return fmt.Errorf("delivered %d of %d frames, none for %v", n, want, stall)
		}
	}
	return nil
}

// Throughput measures the datapath's forwarding rate: one switch with two
// ports, src on one and dst on the other (dstMAC pre-learned on it when
// not nil, so the path is learned unicast), served by a Stack built from
// cfg (use one pinned poller for "Mpps per core"). It sends b.N frames
// and reports Mpps; it returns the stack's counters.
func Throughput(b *testing.B, cfg netstack.Config, src Source, dst Counter, dstMAC []byte) netstack.Stats {
	b.Helper()
	st, err := netstack.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	sw, _ := TwoPortSwitch(b, src, dst, dstMAC)
	if err := st.AddSwitch(sw); err != nil {
		b.Fatal(err)
	}
	if err := st.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	// Warm up: the first frames fault pages in and start the poller.
	base := dst.Delivered()
	src.Send(1000)
	if err := WaitDelivered(dst, base+1000, 2*time.Second); err != nil {
		b.Fatalf("warm-up: %v\n%s", err, statsText(st))
	}
	base = dst.Delivered()
	b.ResetTimer()
	start := time.Now()
	src.Send(b.N)
	err = WaitDelivered(dst, base+uint64(b.N), 2*time.Second)
	elapsed := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatalf("%v\n%s", err, statsText(st))
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds()/1e6, "Mpps")
	b.ReportMetric(0, "ns/op") // ns/op of a frame is 1000/Mpps; keep one figure
	return st.Stats()
}

func statsText(st *netstack.Stack) string {
	var buf bytes.Buffer
	_ = st.Stats().WriteText(&buf)
	return buf.String()
}

// TwoPortSwitch returns a switch named "bench" with a port "src" served by
// src and a port "dst" served by dst, with dstMAC (if not nil) learned on
// dst, and the src port (which a synchronous poller drains).
func TwoPortSwitch(tb testing.TB, src, dst netstack.Endpoint, dstMAC []byte) (*netstack.Switch, *netstack.Port) {
	tb.Helper()
	sw := netstack.NewSwitch("bench")
	pa, err := sw.AddPort("src")
	if err != nil {
		tb.Fatal(err)
	}
	pb, err := sw.AddPort("dst")
	if err != nil {
		tb.Fatal(err)
	}
	if err := pa.SetEndpoints([]netstack.Endpoint{src}); err != nil {
		tb.Fatal(err)
	}
	if err := pb.SetEndpoints([]netstack.Endpoint{dst}); err != nil {
		tb.Fatal(err)
	}
	if dstMAC != nil {
		if err := sw.Learn(dstMAC, pb); err != nil {
			tb.Fatal(err)
		}
	}
	return sw, pa
}
