package virtio_test

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/virtq"
	"golang.org/x/sys/unix"
)

// fakeDev is a device with two queues: 0 served by the transport's worker,
// 1 served by the device itself (SelfServer). It counts what the transport
// does to it and lets a test hook Activate and Process.
type fakeDev struct {
	activations, resets, processed atomic.Int64
	// live counts activations since the last reset: never above 1.
	live atomic.Int64
	over atomic.Bool

	mu         sync.Mutex
	onActivate func(queues []*virtio.Queue) error
	onProcess  func(q *virtio.Queue)
	chain      virtq.Chain
}

func (d *fakeDev) Type() uint16               { return virtio.TypeRNG }
func (d *fakeDev) Features() uint64           { return 1 << 3 }
func (d *fakeDev) QueueSizes() []uint16       { return []uint16{8, 8} }
func (d *fakeDev) ReadConfig(uint64, []byte)  {}
func (d *fakeDev) WriteConfig(uint64, []byte) {}
func (d *fakeDev) ServesQueue(i int) bool     { return i == 1 }

func (d *fakeDev) Activate(_ uint64, queues []*virtio.Queue) error {
	d.activations.Add(1)
	if d.live.Add(1) > 1 {
		d.over.Store(true)
	}
	d.mu.Lock()
	hook := d.onActivate
	d.mu.Unlock()
	if hook != nil {
		if err := hook(queues); err != nil {
			d.live.Add(-1)
			return err
		}
	}
	return nil
}

func (d *fakeDev) Process(q *virtio.Queue) {
	d.mu.Lock()
	hook := d.onProcess
	d.mu.Unlock()
	d.processed.Add(1)
	if hook != nil {
		hook(q)
		return
	}
	q.Drain(&d.chain, func(*virtq.Chain) uint32 { return 0 })
}

func (d *fakeDev) Reset() {
	d.resets.Add(1)
	d.live.Store(0)
}

// Status bits.
const (
	sAck, sDriver, sDriverOK, sFeaturesOK, sNeedsReset = 1, 2, 4, 8, 0x40
)

type rig struct {
	t    *testing.T
	p    *virtio.PCI
	dev  *fakeDev
	plat *virtio.FakePlatform
	mem  *memory.Memory
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dev := &fakeDev{}
	p, plat, mem := newTransport(t, dev)
	return &rig{t: t, p: p, dev: dev, plat: plat, mem: mem}
}

func (r *rig) status() uint8     { return r.p.ReadStatusForTest() }
func (r *rig) setStatus(v uint8) { r.p.BARWrite(0, common+0x14, []byte{v}) }

// negotiate runs the driver's steps up to FEATURES_OK accepted.
func (r *rig) negotiate() {
	r.setStatus(sAck)
	r.setStatus(sAck | sDriver)
	w32(r.p, common+0x08, 1)
	w32(r.p, common+0x0c, 1) // VERSION_1
	r.setStatus(sAck | sDriver | sFeaturesOK)
	if r.status()&sFeaturesOK == 0 {
		r.t.Fatal("FEATURES_OK refused")
	}
}

// queues programs and enables both queues with rings in guest memory.
func (r *rig) queues() {
	for q := uint16(0); q < 2; q++ {
		base := 0x10000 + 0x4000*uint64(q)
		w16(r.p, common+0x16, q)
		w64(r.p, common+0x20, base)
		w64(r.p, common+0x28, base+0x1000)
		w64(r.p, common+0x30, base+0x2000)
		w16(r.p, common+0x1c, 1)
	}
}

// TestDriverOKNeedsFeaturesOK: DRIVER_OK without an accepted FEATURES_OK
// activates nothing.
func TestDriverOKNeedsFeaturesOK(t *testing.T) {
	r := newRig(t)
	r.setStatus(sAck)
	r.setStatus(sAck | sDriver)
	r.queues()
	r.setStatus(sAck | sDriver | sDriverOK)
	if n := r.dev.activations.Load(); n != 0 {
		t.Fatalf("DRIVER_OK without FEATURES_OK activated the device %d times", n)
	}
	if r.status()&sDriverOK != 0 {
		t.Fatalf("status %#x: DRIVER_OK accepted without FEATURES_OK", r.status())
	}
}

// TestNoSecondActivation: a driver clearing DRIVER_OK without a reset and
// setting it again must not activate the device twice (two workers on
// one ring, a second ioeventfd on one address).
func TestNoSecondActivation(t *testing.T) {
	r := newRig(t)
	r.negotiate()
	r.queues()
	r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK)
	if r.dev.activations.Load() != 1 || r.status()&sNeedsReset != 0 {
		t.Fatalf("first activation: %d activations, status %#x", r.dev.activations.Load(), r.status())
	}
	r.setStatus(sAck | sDriver | sFeaturesOK) // clears DRIVER_OK: refused
	if r.status()&sDriverOK == 0 {
		t.Fatalf("status %#x: a driver cleared DRIVER_OK without a reset", r.status())
	}
	r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK)
	if n := r.dev.activations.Load(); n != 1 || r.dev.over.Load() {
		t.Fatalf("%d activations without a reset between them, want 1", n)
	}
	if r.status()&sNeedsReset != 0 {
		t.Fatalf("status %#x after a refused write", r.status())
	}
	r.setStatus(0)
	r.negotiate()
	r.queues()
	r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK)
	if n := r.dev.activations.Load(); n != 2 || r.status()&sNeedsReset != 0 {
		t.Fatalf("after reset: %d activations (want 2), status %#x", n, r.status())
	}
}

// TestFailDuringActivate: a queue failing while the device's Activate
// waits for it (netdev: Attach quiesces a poller that is inside
// Queue.Fail) must not deadlock the transport.
func TestFailDuringActivate(t *testing.T) {
	r := newRig(t)
	r.dev.onActivate = func(queues []*virtio.Queue) error {
		done := make(chan struct{})
		go func() {
			queues[1].Fail(errors.New("poller found a broken ring"))
			close(done)
		}()
		select {
		case <-done:
			return nil
		case <-time.After(2 * time.Second):
			return errors.New("Queue.Fail blocked while Activate ran")
		}
	}
	r.negotiate()
	r.queues()
	r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK)
	if err := r.p.Err(); err == nil || err.Error() != "poller found a broken ring" {
		t.Fatalf("Err() = %v, want the queue's failure (not a deadlock)", err)
	}
	if r.status()&sNeedsReset == 0 {
		t.Fatalf("status %#x lacks NEEDS_RESET", r.status())
	}
}

// TestKickRegistrationFails: a queue whose kick cannot be registered as
// an ioeventfd fails the activation.
func TestKickRegistrationFails(t *testing.T) {
	r := newRig(t)
	r.plat.SetFailRegister(unix.ENOSPC)
	r.negotiate()
	r.queues()
	r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK)
	if r.status()&sNeedsReset == 0 || r.p.Err() == nil {
		t.Fatalf("status %#x, Err %v: a failed ioeventfd registration went unnoticed", r.status(), r.p.Err())
	}
	if !errors.Is(r.p.Err(), unix.ENOSPC) {
		t.Errorf("Err() = %v, want it to wrap ENOSPC", r.p.Err())
	}
	if r.dev.live.Load() != 0 {
		t.Error("the device was left active with a queue it cannot be kicked on")
	}
	r.plat.SetFailRegister(nil)
	r.setStatus(0)
	if r.status() != 0 || r.plat.Registered() != 0 || r.p.Err() != nil {
		t.Fatalf("after reset: status %#x, %d ioeventfds, Err %v", r.status(), r.plat.Registered(), r.p.Err())
	}
}

// TestResetWhileActivating: a reset written (by another vCPU) while the
// device's Activate runs neither blocks nor is lost: the device is reset
// once Activate returns.
func TestResetWhileActivating(t *testing.T) {
	r := newRig(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	r.dev.onActivate = func([]*virtio.Queue) error {
		close(entered)
		<-release
		return nil
	}
	r.negotiate()
	r.queues()
	activated := make(chan struct{})
	go func() {
		r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK)
		close(activated)
	}()
	<-entered
	wrote := make(chan struct{})
	go func() {
		r.setStatus(0)
		close(wrote)
	}()
	select {
	case <-wrote:
	case <-time.After(2 * time.Second):
		close(release)
		t.Fatal("a reset write blocked while another vCPU's activation ran")
	}
	if r.status() == 0 {
		t.Error("status read 0 before the pending reset was done")
	}
	close(release)
	<-activated
	if r.status() != 0 || r.dev.resets.Load() == 0 || r.dev.live.Load() != 0 {
		t.Fatalf("after activation: status %#x, %d resets, live %d; want the deferred reset done", r.status(), r.dev.resets.Load(), r.dev.live.Load())
	}
}

// TestRefusedWrites: writes the rules forbid have no effect and are
// counted.
func TestRefusedWrites(t *testing.T) {
	r := newRig(t)
	refused := func() uint64 { return r.p.Stats().RefusedWrites }
	r.setStatus(sDriver) // DRIVER without ACKNOWLEDGE
	if r.status() != 0 || refused() != 1 {
		t.Fatalf("DRIVER without ACKNOWLEDGE: status %#x, %d refused", r.status(), refused())
	}
	r.setStatus(sAck | 0x10) // reserved bit
	if r.status() != 0 || refused() != 2 {
		t.Fatalf("reserved bit: status %#x, %d refused", r.status(), refused())
	}
	r.negotiate()
	w32(r.p, common+0x0c, 0) // driver_feature after FEATURES_OK
	if refused() != 3 {
		t.Fatalf("driver_feature after FEATURES_OK not refused (%d)", refused())
	}
	w16(r.p, common+0x16, 0)
	w16(r.p, common+0x18, 6) // not a power of two
	w16(r.p, common+0x18, 4)
	if got := r16(r.p, common+0x18); got != 4 || refused() != 4 {
		t.Fatalf("queue_size: %d, %d refused; want 4 and the size 6 refused", got, refused())
	}
	w16(r.p, common+0x1c, 0) // queue_enable 0
	w16(r.p, common+0x12, 9) // num_queues is read-only
	if refused() != 6 {
		t.Fatalf("%d refused, want 6", refused())
	}
	r.queues()
	w16(r.p, common+0x16, 0)
	w64(r.p, common+0x20, 0x50000) // desc of an enabled queue: 2 refused halves
	if got := r32(r.p, common+0x20); got != 0x10000 || refused() != 8 {
		t.Fatalf("queue_desc of an enabled queue: %#x, %d refused", got, refused())
	}
	r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK)
	before := refused()
	w16(r.p, common+0x1a, 1) // queue vector while live
	w16(r.p, common+0x16, 1)
	w16(r.p, common+0x18, 2)
	w16(r.p, common+0x16, 7)    // no such queue: select is fine...
	w16(r.p, common+0x1c, 1)    // ...but its registers are refused
	r.setStatus(sAck | sDriver) // clears bits
	if got := refused() - before; got != 4 {
		t.Fatalf("%d writes refused while live, want 4", got)
	}
	if v := r16(r.p, common+0x1a); v != 0xffff {
		t.Errorf("queue_msix_vector of a missing queue reads %#x", v)
	}
	w16(r.p, common+0x16, 0)
	if v := r16(r.p, common+0x1a); v != 0xffff {
		t.Errorf("queue 0 vector changed to %#x while live", v)
	}
	if st := r.status(); st != sAck|sDriver|sFeaturesOK|sDriverOK {
		t.Errorf("status %#x after refused writes", st)
	}
	// FAILED is accepted; after it only a reset.
	r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK | 0x80)
	if r.status()&0x80 == 0 {
		t.Fatal("FAILED refused")
	}
	if s := r.p.Stats(); s.Activations != 1 || s.Resets != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestRefusedFeatures: FEATURES_OK with features the device did not
// offer is not set, and DRIVER_OK cannot follow.
func TestRefusedFeatures(t *testing.T) {
	r := newRig(t)
	r.setStatus(sAck | sDriver)
	w32(r.p, common+0x08, 0)
	w32(r.p, common+0x0c, 1<<4) // not offered
	w32(r.p, common+0x08, 1)
	w32(r.p, common+0x0c, 1)
	r.setStatus(sAck | sDriver | sFeaturesOK)
	if r.status() != sAck|sDriver || r.p.Stats().RefusedFeatures != 1 {
		t.Fatalf("status %#x, stats %+v: want FEATURES_OK refused", r.status(), r.p.Stats())
	}
	r.queues()
	r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK)
	if r.dev.activations.Load() != 0 || r.status()&sDriverOK != 0 {
		t.Fatal("activated after refused features")
	}
}

// TestPauseResume: Pause waits for a running Process and keeps the
// workers out until Resume; kicks meanwhile are served after it; a paused
// device resets and closes.
func TestPauseResume(t *testing.T) {
	r := newRig(t)
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	var blocking atomic.Bool
	blocking.Store(true)
	r.dev.onProcess = func(*virtio.Queue) {
		entered <- struct{}{}
		if blocking.Load() {
			<-release
		}
	}
	r.negotiate()
	r.queues()
	r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK)
	<-entered // the worker's first pass is inside Process
	paused := make(chan struct{})
	go func() { r.p.Pause(); close(paused) }()
	select {
	case <-paused:
		t.Fatal("Pause returned while a worker was inside Process")
	case <-time.After(50 * time.Millisecond):
	}
	blocking.Store(false)
	close(release)
	select {
	case <-paused:
	case <-time.After(5 * time.Second):
		t.Fatal("Pause did not return after Process did")
	}
	n := r.dev.processed.Load()
	w16(r.p, notify, 0) // a kick while paused
	time.Sleep(50 * time.Millisecond)
	if got := r.dev.processed.Load(); got != n {
		t.Fatalf("Process ran %d times while paused", got-n)
	}
	r.p.Resume()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the kick that came while paused was never served")
	}
	// Reset and reactivate while paused: the new worker waits too.
	r.p.Pause()
	for len(entered) > 0 {
		<-entered
	}
	n = r.dev.processed.Load()
	r.setStatus(0)
	r.negotiate()
	r.queues()
	r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK)
	time.Sleep(50 * time.Millisecond)
	if got := r.dev.processed.Load(); got != n {
		t.Fatalf("a new activation's worker ran Process %d times while paused", got-n)
	}
	if !r.p.Paused() {
		t.Fatal("not paused after a reset")
	}
	closed := make(chan error)
	go func() { closed <- r.p.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close of a paused device hung")
	}
	if r.plat.Registered() != 0 {
		t.Errorf("%d ioeventfds left after Close", r.plat.Registered())
	}
}

// epollWatched returns the fds that some epoll instance of this process
// watches (/proc/self/fdinfo lists each watched fd as "tfd:").
func epollWatched(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fdinfo")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]bool{}
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "tfd:" {
				if fd, err := strconv.Atoi(f[1]); err == nil {
					out[fd] = true
				}
			}
		}
	}
	return out
}

// TestSelfServedKickNotInNetpoller: the kick eventfd of a queue the
// device serves itself stays out of Go's netpoller (its poller waits on
// it; in the netpoller too, each guest kick would also wake a runtime
// thread for nothing), while a worker-served queue's kick is in it (the
// worker's Read blocks there).
func TestSelfServedKickNotInNetpoller(t *testing.T) {
	r := newRig(t)
	var got []*virtio.Queue
	r.dev.onActivate = func(queues []*virtio.Queue) error {
		got = queues
		return nil
	}
	r.negotiate()
	r.queues()
	r.setStatus(sAck | sDriver | sFeaturesOK | sDriverOK)
	if len(got) != 2 || got[0] == nil || got[1] == nil {
		t.Fatalf("activated with %v", got)
	}
	watched := epollWatched(t)
	if fd := got[0].KickFD(); !watched[fd] {
		t.Errorf("worker-served queue 0: kick fd %d is in no epoll: the check cannot see the netpoller", fd)
	}
	if fd := got[1].KickFD(); watched[fd] {
		t.Errorf("self-served queue 1: kick fd %d is in an epoll (Go's netpoller)", fd)
	}
	r.setStatus(0)
	for _, q := range got {
		if _, err := unix.FcntlInt(uintptr(q.KickFD()), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("queue %d: kick fd %d still open after reset (%v)", q.Index, q.KickFD(), err)
		}
	}
}
