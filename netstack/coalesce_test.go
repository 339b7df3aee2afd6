package netstack_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/vnet"
	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/netstack/netstacktest"
)

// txCompleter is a Queue whose sender learns of its transmissions from
// CompleteTx: it notes how many frames the poller had taken from it when
// the last CompleteTx came (covered), and when the first one covering
// each new frame came.
type txCompleter struct {
	*netstacktest.Queue
	taken, covered, calls atomic.Uint64
	coveredAt             atomic.Int64 // time.Now().UnixNano() when covered last grew
}

func (c *txCompleter) Transmit(max int, fn func([]byte, vnet.Offload)) int {
	n := c.Queue.Transmit(max, fn)
	c.taken.Add(uint64(n))
	return n
}

func (c *txCompleter) CompleteTx() {
	c.calls.Add(1)
	if t := c.taken.Load(); t > c.covered.Load() {
		c.covered.Store(t)
		c.coveredAt.Store(time.Now().UnixNano())
	}
}

// coalescingPair is a switch with ports a and b, each a txCompleter.
func coalescingPair(t *testing.T) (*netstack.Switch, *netstack.Port, *txCompleter, *txCompleter) {
	t.Helper()
	sw := netstack.NewSwitch("sw0")
	pa, _ := sw.AddPort("a")
	pb, _ := sw.AddPort("b")
	a := &txCompleter{Queue: newQueue(t, 0)}
	b := &txCompleter{Queue: newQueue(t, 0)}
	if err := pa.SetEndpoints([]netstack.Endpoint{a}); err != nil {
		t.Fatal(err)
	}
	if err := pb.SetEndpoints([]netstack.Endpoint{b}); err != nil {
		t.Fatal(err)
	}
	return sw, pa, a, b
}

// pollerModes are the two ways a poller waits: spinning between passes,
// and asleep in epoll between every pass that found nothing.
var pollerModes = []struct {
	name   string
	noSpin bool
}{{"spinning", false}, {"sleeping", true}}

// TestTxCompletionRidesWithDelivery: with TxCoalesce, a sender's
// transmit completion waits until its poller delivers a frame to it (a
// reply), and then comes at once.
func TestTxCompletionRidesWithDelivery(t *testing.T) {
	for _, m := range pollerModes {
		t.Run(m.name, func(t *testing.T) {
			checkNoLeaks(t)
			sw, _, a, b := coalescingPair(t)
			st := startStack(t, netstack.Config{PollerCores: []int{1}, Sharing: netstack.SharingDedicated,
				NoSpin: m.noSpin, TxCoalesce: time.Minute}, sw)
			a.Inject(frame(macB, macA))
			waitFor(t, "b to receive a's frame", func() bool { return len(b.Take()) == 1 })
			time.Sleep(20 * time.Millisecond)
			if c := a.covered.Load(); c != 0 {
				t.Fatalf("a's completion came within 20 ms with no reply (covered %d frames): not held back", c)
			}
			if ps := st.Stats().Pollers[0]; ps.TxDeferred != 1 || ps.TxRidden != 0 {
				t.Fatalf("deferred %d, ridden %d; want 1, 0", ps.TxDeferred, ps.TxRidden)
			}
			b.Inject(frame(macA, macB))
			waitFor(t, "a's completion with b's reply", func() bool { return a.covered.Load() == 1 })
			if got := a.Take(); len(got) != 1 {
				t.Fatalf("a received %d frames, want 1", len(got))
			}
			if ps := st.Stats().Pollers[0]; ps.TxRidden != 1 {
				t.Fatalf("ridden %d, want 1 (%+v)", ps.TxRidden, ps)
			}
		})
	}
}

// TestTxCompletionDeadline: with no reply, a held-back completion comes
// once TxCoalesce has passed, not before, whether the poller spins or
// sleeps meanwhile.
func TestTxCompletionDeadline(t *testing.T) {
	const coalesce = 30 * time.Millisecond
	for _, m := range pollerModes {
		t.Run(m.name, func(t *testing.T) {
			checkNoLeaks(t)
			sw, _, a, b := coalescingPair(t)
			st := startStack(t, netstack.Config{PollerCores: []int{1}, Sharing: netstack.SharingDedicated,
				NoSpin: m.noSpin, TxCoalesce: coalesce}, sw)
			t0 := time.Now()
			a.Inject(frame(macB, macA))
			waitFor(t, "a's completion", func() bool { return a.covered.Load() == 1 })
			if d := time.Duration(a.coveredAt.Load() - t0.UnixNano()); d < coalesce {
				t.Fatalf("a's completion came %v after its frame, before TxCoalesce (%v)", d, coalesce)
			}
			if len(b.Take()) != 1 {
				t.Fatal("b did not receive a's frame")
			}
			if ps := st.Stats().Pollers[0]; ps.TxDeferred != 1 || ps.TxRidden != 0 {
				t.Fatalf("deferred %d, ridden %d; want 1, 0", ps.TxDeferred, ps.TxRidden)
			}
		})
	}
}

// TestTxCompletionDroppedWithEndpoint: a completion held back for an
// endpoint that leaves its port is forgotten: CompleteTx is never called
// on it after SetEndpoints returns.
func TestTxCompletionDroppedWithEndpoint(t *testing.T) {
	checkNoLeaks(t)
	sw, pa, a, b := coalescingPair(t)
	const coalesce = 300 * time.Millisecond
	startStack(t, netstack.Config{PollerCores: []int{1}, Sharing: netstack.SharingDedicated,
		NoSpin: true, TxCoalesce: coalesce}, sw)
	a.Inject(frame(macB, macA))
	waitFor(t, "b to receive a's frame", func() bool { return len(b.Take()) == 1 })
	if err := pa.SetEndpoints(nil); err != nil {
		t.Fatal(err)
	}
	calls := a.calls.Load()
	if a.covered.Load() != 0 {
		t.Fatalf("a's completion came before its endpoint left (over %v after its frame): the test did not exercise the drop", coalesce)
	}
	time.Sleep(2 * coalesce)
	if c := a.calls.Load(); c != calls {
		t.Fatalf("CompleteTx called %d times on an endpoint after it left its port", c-calls)
	}
}
