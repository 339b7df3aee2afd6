package netstack_test

import (
	"context"
	"encoding/binary"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/gomaxprocs"
	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/netstack/netstacktest"
)

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// checkNoLeaks fails the test if goroutines or fds outlive it.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	t.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > g0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if g := runtime.NumGoroutine(); g > g0 {
			buf := make([]byte, 1<<16)
			t.Errorf("%d goroutines leaked:\n%s", g-g0, buf[:runtime.Stack(buf, true)])
		}
		if fd := openFDs(t); fd > fd0 {
			t.Errorf("%d fds leaked", fd-fd0)
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func startStack(t testing.TB, cfg netstack.Config, sws ...*netstack.Switch) *netstack.Stack {
	t.Helper()
	st, err := netstack.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	for _, sw := range sws {
		if err := st.AddSwitch(sw); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestPollersMoveFrames(t *testing.T) {
	checkNoLeaks(t)
	sw := netstack.NewSwitch("sw0")
	qs := map[string]*netstacktest.Queue{}
	for _, n := range []string{"a", "b", "c"} {
		p, _ := sw.AddPort(n)
		qs[n] = newQueue(t, 0)
		if err := p.SetEndpoints([]netstack.Endpoint{qs[n]}); err != nil {
			t.Fatal(err)
		}
	}
	st := startStack(t, netstack.Config{PollerCores: []int{0, 1}}, sw)
	// Introduce everyone, then send unicast both ways.
	qs["a"].Inject(frame(bcast, macA))
	qs["b"].Inject(frame(bcast, macB))
	waitFor(t, "learning", func() bool { return sw.MACs() == 2 })
	const n = 3000
	for i := range n {
		fa := netstacktest.Frame(macB, macA, 64+i%1400)
		fa[50] = byte(i)
		fb := netstacktest.Frame(macA, macB, 64)
		fb[50] = byte(i)
		qs["a"].Inject(fa)
		qs["b"].Inject(fb)
	}
	var got = map[string][][]byte{}
	waitFor(t, "frames", func() bool {
		for _, k := range []string{"a", "b"} {
			got[k] = append(got[k], qs[k].Take()...)
		}
		return len(got["a"]) >= n+1 && len(got["b"]) >= n+1
	})
	for _, k := range []string{"a", "b"} {
		fs := got[k][1:] // the other's broadcast first
		for i, f := range fs {
			if f[50] != byte(i) {
				t.Fatalf("port %s: frame %d out of order", k, i)
			}
		}
	}
	if c := qs["c"].Take(); len(c) != 2 {
		t.Errorf("port c got %d frames, want the 2 broadcasts", len(c))
	}
	s := st.Stats()
	var frames uint64
	for _, p := range s.Pollers {
		frames += p.Frames
		if p.Endpoints != 1 && p.Endpoints != 2 {
			t.Errorf("poller %d owns %d endpoints: not round-robin", p.Index, p.Endpoints)
		}
		if p.TID == 0 {
			t.Errorf("poller %d has no tid", p.Index)
		}
	}
	if frames != 2*n+2 {
		t.Errorf("pollers counted %d frames, want %d", frames, 2*n+2)
	}
	pa := s.Switches[0].Ports[0]
	if pa.Name != "a" || pa.RxPackets != n+1 || pa.TxPackets != n+1 || pa.Drops.Total() != 0 {
		t.Errorf("port a stats %+v", pa)
	}
	var text strings.Builder
	if err := s.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "sw0/a") {
		t.Errorf("stats text lacks port sw0/a:\n%s", text.String())
	}
	var js strings.Builder
	if err := s.WriteJSON(&js); err != nil || !strings.Contains(js.String(), `"rx_packets"`) {
		t.Errorf("stats JSON: %v\n%s", err, js.String())
	}
}

func TestIdlePollerSleepsAndWakes(t *testing.T) {
	checkNoLeaks(t)
	sw, qa, qb := twoPortSwitch(t)
	var woke atomic.Int64
	st := startStack(t, netstack.Config{
		PollerCores: []int{1},
		IdleAfter:   time.Millisecond,
		OnWake:      func(int) { woke.Add(1) },
	}, sw)
	for round := 1; round <= 3; round++ {
		var before netstack.PollerStats
		waitFor(t, "the poller to sleep", func() bool {
			before = st.Stats().Pollers[0]
			return before.Sleeps == uint64(round) && before.Wakeups == uint64(round-1)
		})
		time.Sleep(2 * time.Millisecond) // let it reach epoll_wait
		kicks := qa.Kicks()
		f := frame(macB, macA)
		qa.Inject(f)
		if qa.Kicks() != kicks+1 {
			t.Fatal("injecting into an armed endpoint did not kick it")
		}
		waitFor(t, "the frame", func() bool { return len(qb.Take()) == 1 })
		after := st.Stats().Pollers[0]
		if after.Wakeups != before.Wakeups+1 {
			t.Errorf("round %d: wakeups %d -> %d, want +1", round, before.Wakeups, after.Wakeups)
		}
		if after.Frames != uint64(round) {
			t.Errorf("round %d: %d frames counted", round, after.Frames)
		}
	}
	if woke.Load() < 3 {
		t.Errorf("OnWake called %d times, want at least 3", woke.Load())
	}
	// While polling (not armed), injecting must not kick.
	qa.Inject(frame(macB, macA))
	waitFor(t, "the frame", func() bool { return len(qb.Take()) == 1 })
	kicks := qa.Kicks()
	qa.Inject(frame(macB, macA))
	waitFor(t, "the frame", func() bool { return len(qb.Take()) == 1 })
	if qa.Kicks() != kicks && st.Stats().Pollers[0].Sleeps == 3 {
		t.Error("a polled (disarmed) endpoint was kicked")
	}
}

// twoPortSwitch returns switch sw0 with ports a and b, each on a test
// queue of its own.
func twoPortSwitch(t *testing.T) (*netstack.Switch, *netstacktest.Queue, *netstacktest.Queue) {
	t.Helper()
	sw := netstack.NewSwitch("sw0")
	pa, _ := sw.AddPort("a")
	pb, _ := sw.AddPort("b")
	qa, qb := newQueue(t, 0), newQueue(t, 0)
	_ = pa.SetEndpoints([]netstack.Endpoint{qa})
	_ = pb.SetEndpoints([]netstack.Endpoint{qb})
	return sw, qa, qb
}

// TestNoSpinSleepsAfterOneEmptyPass: with NoSpin a poller on a core of
// its own (which would otherwise spin IdleAfter and more) sleeps after
// each pass that found nothing, and a kick still wakes it for the frame.
func TestNoSpinSleepsAfterOneEmptyPass(t *testing.T) {
	checkNoLeaks(t)
	sw, qa, qb := twoPortSwitch(t)
	st := startStack(t, netstack.Config{
		PollerCores: []int{1},
		Sharing:     netstack.SharingDedicated,
		IdleAfter:   time.Second, // ignored
		NoSpin:      true,
	}, sw)
	for round := uint64(1); round <= 3; round++ {
		var ps netstack.PollerStats
		waitFor(t, "the poller to sleep", func() bool {
			ps = st.Stats().Pollers[0]
			return ps.Sleeps == round
		})
		if ps.IdleSpinNanos != 0 {
			t.Errorf("round %d: idle spin %d ns, want 0", round, ps.IdleSpinNanos)
		}
		// Each sleep follows one empty pass (plus one per arming race).
		if ps.EmptyPolls > ps.Sleeps+ps.ArmRaces {
			t.Errorf("round %d: %d empty passes for %d sleeps and %d arm races: it spun", round, ps.EmptyPolls, ps.Sleeps, ps.ArmRaces)
		}
		time.Sleep(2 * time.Millisecond) // let it reach epoll_wait
		qa.Inject(frame(macB, macA))
		waitFor(t, "the frame", func() bool { return len(qb.Take()) == 1 })
	}
}

func TestSetEndpointsUnderTraffic(t *testing.T) {
	checkNoLeaks(t)
	sw := netstack.NewSwitch("sw0")
	pa, _ := sw.AddPort("a")
	pb, _ := sw.AddPort("b")
	pc, _ := sw.AddPort("c")
	qa := newQueue(t, 0)
	qc := newQueue(t, 0)
	_ = pa.SetEndpoints([]netstack.Endpoint{qa})
	_ = pc.SetEndpoints([]netstack.Endpoint{qc})
	_ = sw.Learn(macB[:], pb)
	st := startStack(t, netstack.Config{PollerCores: []int{0, 1}, IdleAfter: 50 * time.Microsecond}, sw)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	// a and c send to B continuously; the flows hash over b's queues.
	for _, q := range []*netstacktest.Queue{qa, qc} {
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				if q.Pending() < 256 {
					q.Inject(udpFrame(uint16(i)))
				} else {
					runtime.Gosched()
				}
			}
		}()
	}
	var old []*netstacktest.Queue
	var total uint64
	for i := range 200 {
		n := 1 + i%4
		if i%10 == 9 {
			n = 0 // down for a while
		}
		qs := make([]*netstacktest.Queue, n)
		eps := make([]netstack.Endpoint, n)
		for j := range qs {
			q, err := netstacktest.NewQueue(0)
			if err != nil {
				t.Fatal(err)
			}
			qs[j], eps[j] = q, q
		}
		if err := pb.SetEndpoints(eps); err != nil {
			t.Fatal(err)
		}
		// The old queues are now free: any later use is a violation.
		for _, q := range old {
			total += q.Delivered()
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			if v := q.Violations(); v != 0 {
				t.Fatalf("replacement %d: %d contract violations", i, v)
			}
		}
		old = qs
		time.Sleep(200 * time.Microsecond)
	}
	cancel()
	wg.Wait()
	time.Sleep(10 * time.Millisecond)
	if err := pb.SetEndpoints(nil); err != nil {
		t.Fatal(err)
	}
	for _, q := range old {
		total += q.Delivered()
		_ = q.Close()
	}
	for _, q := range append(old, qa, qc) {
		if v := q.Violations(); v != 0 {
			t.Errorf("%d contract violations", v)
		}
	}
	if total == 0 {
		t.Fatal("no frame reached port b")
	}
	sb := pb.Stats()
	if sb.TxPackets != total {
		t.Errorf("port b counted %d delivered frames, queues got %d", sb.TxPackets, total)
	}
	if sb.Drops.PortDown == 0 {
		t.Error("no port-down drops while b was down")
	}
	t.Logf("delivered %d frames to b across 200 replacements; %d port-down drops; pollers %+v",
		total, sb.Drops.PortDown, st.Stats().Pollers)
}

func TestStartPinFailure(t *testing.T) {
	checkNoLeaks(t)
	st, err := netstack.New(netstack.Config{PollerCores: []int{0, 1000}})
	if err != nil {
		t.Fatal(err)
	}
	err = st.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "sched_setaffinity") {
		t.Fatalf("Start with core 1000: %v, want a sched_setaffinity error", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	checkNoLeaks(t)
	st, err := netstack.New(netstack.Config{Pollers: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- st.Run(ctx) }()
	time.Sleep(5 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := st.Start(context.Background()); err == nil {
		t.Fatal("Start after Close succeeded")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPollersReserveGOMAXPROCS: each poller thread holds a Go P while it
// polls, so a running stack raises GOMAXPROCS by its pollers and Close
// gives them back.
func TestPollersReserveGOMAXPROCS(t *testing.T) {
	checkNoLeaks(t)
	_, before := gomaxprocs.State()
	procs := runtime.GOMAXPROCS(0)
	st, err := netstack.New(netstack.Config{Pollers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, r := gomaxprocs.State(); r != before+2 {
		t.Errorf("reservations with 2 pollers running: %d, want %d", r, before+2)
	}
	if got := runtime.GOMAXPROCS(0); got != procs+2 {
		t.Errorf("GOMAXPROCS with 2 pollers running: %d, want %d", got, procs+2)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, r := gomaxprocs.State(); r != before {
		t.Errorf("reservations after Close: %d, want %d", r, before)
	}
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Errorf("GOMAXPROCS after Close: %d, want %d", got, procs)
	}
}

// kickCounter is a test queue that counts its kicks as netdev's queue
// pair does: it reads (and clears) its eventfd when the poller says the
// fd woke it.
type kickCounter struct {
	*netstacktest.Queue
	calls, counted atomic.Uint64
}

func (k *kickCounter) CountKicks() {
	k.calls.Add(1)
	var b [8]byte
	if n, err := unix.Read(k.WaitFD(), b[:]); err == nil && n == len(b) {
		k.counted.Add(binary.NativeEndian.Uint64(b[:]))
	}
}

// TestKickCounterReadOnWake: a KickCounter's count is read once per kick
// that woke its poller, and an idle endpoint's never (a read on every
// sleep would be a system call per endpoint per sleep).
func TestKickCounterReadOnWake(t *testing.T) {
	checkNoLeaks(t)
	sw := netstack.NewSwitch("sw0")
	pa, _ := sw.AddPort("a")
	pb, _ := sw.AddPort("b")
	qa, qb := &kickCounter{Queue: newQueue(t, 0)}, &kickCounter{Queue: newQueue(t, 0)}
	_ = pa.SetEndpoints([]netstack.Endpoint{qa})
	_ = pb.SetEndpoints([]netstack.Endpoint{qb})
	st := startStack(t, netstack.Config{PollerCores: []int{1}, IdleAfter: time.Millisecond}, sw)
	const rounds = 3
	for round := 1; round <= rounds; round++ {
		waitFor(t, "the poller to sleep", func() bool { return st.Stats().Pollers[0].Sleeps == uint64(round) })
		time.Sleep(2 * time.Millisecond) // let it reach epoll_wait
		qa.Inject(frame(macB, macA))
		waitFor(t, "the frame", func() bool { return len(qb.Take()) == 1 })
	}
	waitFor(t, "the kicks counted", func() bool { return qa.counted.Load() == qa.Kicks() })
	if qa.Kicks() != rounds || qa.calls.Load() != rounds {
		t.Errorf("a: %d kicks, CountKicks called %d times, want %d each", qa.Kicks(), qa.calls.Load(), rounds)
	}
	if qb.calls.Load() != 0 || qb.counted.Load() != 0 {
		t.Errorf("b was never kicked, yet CountKicks was called %d times (%d counted)", qb.calls.Load(), qb.counted.Load())
	}
}
