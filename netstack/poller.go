package netstack

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/seccomp"
	"github.com/colibrivm/colibri/internal/vnet"
)

// poller is one polling thread. Fields after "thread-only" are touched
// only by the poller's own thread.
type poller struct {
	st    *Stack
	index int
	core  int // -1: unpinned
	epfd  int
	ctlfd int
	tid   atomic.Int32

	// seq is odd while the poller may be inside an endpoint method;
	// quiesce waits for it to move past an odd value.
	seq   atomic.Uint64
	owned atomic.Pointer[[]*epSlot]
	// nOwned is len(*owned), guarded by Stack.mu.
	nOwned int
	cnt    pollerCounters

	// thread-only
	batch int
	fn    func([]byte, vnet.Offload)
	// fin finishes pending offloads for endpoints that cannot take them;
	// finSlot is where finSeg delivers the resulting frames.
	fin     *vnet.Finisher
	finSlot *epSlot
	finSeg  func([]byte)
	events  []unix.EpollEvent
	cur     *epSlot
	now     int64
	nowOK   bool
	rxPkts  uint64
	rxBytes uint64
	held    *epSlot
	dirty   []dirtyDest
	hash    uint32
	hashOK  bool
}

// dirtyDest is an endpoint delivered to in the current batch, with the
// frames and bytes delivered, added to its port's counters at Flush.
type dirtyDest struct {
	s            *epSlot
	pkts, nbytes uint64
}

type pollerCounters struct {
	polls, emptyPolls, frames   atomic.Uint64
	sleeps, wakeups, ctlWakeups atomic.Uint64
	armRaces, sleepNanos        atomic.Uint64
	waitErrors                  atomic.Uint64
}

func newPoller(st *Stack, index, core int) (*poller, error) {
	p := &poller{st: st, index: index, core: core, epfd: -1, ctlfd: -1,
		batch: st.cfg.Batch, events: make([]unix.EpollEvent, 64),
		dirty: make([]dirtyDest, 0, 64)}
	p.initSwitching()
	p.owned.Store(new([]*epSlot))
	var err error
	if p.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("poller %d: epoll_create1: %w", index, err)
	}
	if p.ctlfd, err = newEventfd(); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("poller %d: control %w", index, err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(p.ctlfd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, p.ctlfd, &ev); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("poller %d: register control eventfd: %w", index, err)
	}
	return p, nil
}

func (p *poller) closeFDs() error {
	var errs []error
	for _, fd := range []*int{&p.epfd, &p.ctlfd} {
		if *fd >= 0 {
			if err := unix.Close(*fd); err != nil {
				errs = append(errs, fmt.Errorf("poller %d: close fd %d: %w", p.index, *fd, err))
			}
			*fd = -1
		}
	}
	return errors.Join(errs...)
}

// kick wakes the poller if it sleeps (or makes its next sleep return).
func (p *poller) kick() {
	if p.ctlfd < 0 {
		return
	}
	one := [8]byte{1}
	_, _ = unix.Write(p.ctlfd, one[:])
}

// add makes p the owner of s and registers its wait fd. Called with
// Stack.mu held.
func (p *poller) add(s *epSlot) error {
	s.owner = p
	old := *p.owned.Load()
	list := make([]*epSlot, len(old), len(old)+1)
	copy(list, old)
	var err error
	if fd := s.ep.WaitFD(); fd >= 0 {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}
		if e := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); e != nil {
			err = fmt.Errorf("poller %d: register wait fd %d of port %s/%s: %w",
				p.index, fd, s.port.sw.name, s.port.name, e)
		} else {
			s.fd = fd
		}
	}
	list = append(list, s)
	p.nOwned = len(list)
	p.owned.Store(&list)
	return err
}

// remove takes s away from p and unregisters its wait fd. Called with
// Stack.mu held.
func (p *poller) remove(s *epSlot) {
	old := *p.owned.Load()
	list := make([]*epSlot, 0, len(old))
	for _, q := range old {
		if q != s {
			list = append(list, q)
		}
	}
	if s.fd >= 0 {
		// The owner may already have closed the fd, which unregistered it.
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	}
	s.owner = nil
	p.nOwned = len(list)
	p.owned.Store(&list)
}

// quiesce returns once p is outside any endpoint method it may have
// entered before the call.
func (p *poller) quiesce() {
	s := p.seq.Load()
	if s&1 == 0 {
		return
	}
	for spins := 0; p.seq.Load() == s; spins++ {
		if spins < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(10 * time.Microsecond)
		}
	}
}

func monoNanos() int64 { return int64(time.Since(monoEpoch)) }

var monoEpoch = time.Now()

// run is the poller thread's body. It reports on ready once the thread
// is set up.
func (p *poller) run(ready chan<- error) {
	// The thread's affinity is changed, so it is never unlocked: it exits
	// with the goroutine instead of returning to Go's thread pool.
	runtime.LockOSThread()
	if p.core >= 0 {
		var set unix.CPUSet
		set.Set(p.core)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			ready <- fmt.Errorf("poller %d: pin to core %d: sched_setaffinity: %w", p.index, p.core, err)
			return
		}
	}
	if err := seccomp.Thread(seccomp.Poller); err != nil { // the poller's syscall filter
		ready <- fmt.Errorf("poller %d: %w", p.index, err)
		return
	}
	p.tid.Store(int32(unix.Gettid()))
	ready <- nil
	p.loop()
	p.tid.Store(0)
}

func (p *poller) loop() {
	idleAfter := int64(p.st.cfg.IdleAfter)
	var list *[]*epSlot
	var idleSince int64 // 0: found work in the last pass
	for {
		p.seq.Add(1)
		if p.st.stopping.Load() {
			p.seq.Add(1)
			return
		}
		if l := p.owned.Load(); l != list {
			list = l
			for _, s := range *l {
				s.ep.Disarm()
			}
		}
		n := p.pass(*list)
		p.seq.Add(1)
		p.cnt.polls.Add(1)
		if n > 0 {
			p.cnt.frames.Add(n)
			idleSince = 0
			continue
		}
		p.cnt.emptyPolls.Add(1)
		if idleAfter < 0 {
			continue
		}
		now := monoNanos()
		if idleSince == 0 {
			idleSince = now
			continue
		}
		if now-idleSince >= idleAfter {
			p.sleep()
			idleSince = 0
		}
	}
}

// initSwitching sets up the callbacks and buffers the switching code uses.
func (p *poller) initSwitching() {
	p.fn = p.handle
	p.fin = vnet.NewFinisher(vnet.MaxFrame)
	p.finSeg = p.deliverFinished
}

// pass drains each owned endpoint once, up to a batch each, and returns
// how many frames it switched.
func (p *poller) pass(list []*epSlot) uint64 {
	var total uint64
	for _, s := range list {
		p.cur = s
		p.nowOK = false
		p.rxPkts, p.rxBytes = 0, 0
		s.ep.Transmit(p.batch, p.fn)
		if p.rxPkts > 0 {
			total += p.rxPkts
			s.port.cnt.rxPackets.Add(p.rxPkts)
			s.port.cnt.rxBytes.Add(p.rxBytes)
			p.flush()
		}
	}
	p.cur = nil
	return total
}

// flush flushes every endpoint delivered to since the last flush, adds
// their counters and releases the held lock.
func (p *poller) flush() {
	for i := range p.dirty {
		d := &p.dirty[i]
		p.lock(d.s)
		d.s.ep.Flush()
		c := &d.s.port.cnt
		c.txPackets.Add(d.pkts)
		c.txBytes.Add(d.nbytes)
		d.s = nil
	}
	p.dirty = p.dirty[:0]
	if p.held != nil {
		p.held.mu.Unlock()
		p.held = nil
	}
}

// lock makes s the one destination whose lock p holds.
func (p *poller) lock(s *epSlot) {
	if p.held == s {
		return
	}
	if p.held != nil {
		p.held.mu.Unlock()
	}
	s.mu.Lock()
	p.held = s
}

// sleep arms every owned endpoint and waits on their fds, unless one has
// frames already. It returns once the poller should poll again.
func (p *poller) sleep() {
	// Drop readiness left from while polling: after this, only events
	// that follow arming wake the poller, and Arm reports anything that
	// arrived in between.
	for {
		n, err := unix.EpollWait(p.epfd, p.events, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n < len(p.events) {
			break
		}
	}
	p.seq.Add(1)
	if p.st.stopping.Load() {
		p.seq.Add(1)
		return
	}
	list := *p.owned.Load()
	busy := false
	timeout := -1
	for _, s := range list {
		if s.ep.Arm() {
			busy = true
		}
		if s.fd < 0 {
			timeout = 1 // ms: an endpoint that cannot wake us is polled anyway
		}
	}
	if busy {
		for _, s := range list {
			s.ep.Disarm()
		}
		p.seq.Add(1)
		p.cnt.armRaces.Add(1)
		return
	}
	p.seq.Add(1)
	p.cnt.sleeps.Add(1)
	t0 := monoNanos()
	var n int
	var err error
	for {
		n, err = unix.EpollWait(p.epfd, p.events, timeout)
		if err != unix.EINTR {
			break
		}
	}
	if p.st.cfg.OnWake != nil {
		p.st.cfg.OnWake(p.index)
	}
	p.cnt.sleepNanos.Add(uint64(monoNanos() - t0))
	if err != nil {
		if p.cnt.waitErrors.Add(1) == 1 {
			p.st.log.Error("netstack poller: epoll_wait failed", zap.Int("poller", p.index), zap.Error(err))
		}
	}
	ctl := false
	for _, ev := range p.events[:max(n, 0)] {
		if int(ev.Fd) == p.ctlfd {
			ctl = true
		}
	}
	p.cnt.wakeups.Add(1)
	if ctl {
		p.cnt.ctlWakeups.Add(1)
	}
	p.seq.Add(1)
	for _, s := range *p.owned.Load() {
		s.ep.Disarm()
	}
	p.seq.Add(1)
}

// handle switches one frame transmitted by p.cur, with off pending.
func (p *poller) handle(frame []byte, off vnet.Offload) {
	src := p.cur.port
	p.rxPkts++
	p.rxBytes += uint64(len(frame))
	if len(frame) < ethHeaderLen {
		src.cnt.runt.Add(1)
		return
	}
	if frame[6]&1 != 0 { // multicast source address
		src.cnt.badSource.Add(1)
		return
	}
	srcKey := macKey(frame[6:12])
	if !src.allows(srcKey) { // a bound port sending as someone else
		src.cnt.spoofed.Add(1)
		return
	}
	if off.Pending() && off.Check(len(frame)) != nil {
		src.cnt.badOffload.Add(1)
		return
	}
	sw := src.sw
	if !p.nowOK {
		p.now = sw.now()
		p.nowOK = true
	}
	sw.macs.learn(srcKey, src, p.now, sw.refresh.Load(), sw.ageing.Load())
	p.hashOK = false
	if frame[0]&1 == 0 {
		dst := sw.macs.lookup(macKey(frame[0:6]), p.now, sw.ageing.Load())
		if dst != nil && !dst.removed.Load() {
			if dst == src {
				src.cnt.filtered.Add(1)
				return
			}
			p.deliver(dst, frame, off)
			return
		}
	}
	for _, dst := range *sw.ports.Load() {
		if dst != src {
			p.deliver(dst, frame, off)
		}
	}
}

// deliver hands frame to one of dst's endpoints, chosen by flow hash: as
// it is when nothing is pending or the endpoint takes the offloads,
// finished in software otherwise.
func (p *poller) deliver(dst *Port, frame []byte, off vnet.Offload) {
	slots := dst.eps.Load().slots
	var s *epSlot
	switch len(slots) {
	case 0:
		if dst.paused.Load() {
			dst.cnt.paused.Add(1)
		} else {
			dst.cnt.portDown.Add(1)
		}
		return
	case 1:
		s = slots[0]
	default:
		if !p.hashOK {
			p.hash = flowHash(frame)
			p.hashOK = true
		}
		s = slots[p.hash%uint32(len(slots))]
	}
	p.lock(s)
	switch {
	case !off.Pending():
		if !s.ep.Deliver(frame) {
			dst.cnt.noRoom.Add(1)
			return
		}
	case s.oep != nil && s.oep.AcceptsOffload(off):
		if !s.oep.DeliverOffload(frame, off) {
			dst.cnt.noRoom.Add(1)
			return
		}
	default:
		p.finSlot = s
		if _, err := p.fin.Finish(frame, off, p.finSeg); err != nil {
			p.cur.port.cnt.badOffload.Add(1)
		} else {
			dst.cnt.softOffload.Add(1)
		}
		return
	}
	p.delivered(s, len(frame))
}

// deliverFinished delivers one frame the finisher made to p.finSlot.
func (p *poller) deliverFinished(frame []byte) {
	s := p.finSlot
	if !s.ep.Deliver(frame) {
		s.port.cnt.noRoom.Add(1)
		return
	}
	p.delivered(s, len(frame))
}

// delivered notes a frame of n bytes delivered to s, for Flush and the
// port's counters.
func (p *poller) delivered(s *epSlot, n int) {
	d := p.dirtyFor(s)
	d.pkts++
	d.nbytes += uint64(n)
}

// dirtyFor returns s's entry in p.dirty, adding one if need be.
func (p *poller) dirtyFor(s *epSlot) *dirtyDest {
	if k := len(p.dirty); k > 0 && p.dirty[k-1].s == s {
		return &p.dirty[k-1]
	}
	for i := range p.dirty {
		if p.dirty[i].s == s {
			return &p.dirty[i]
		}
	}
	p.dirty = append(p.dirty, dirtyDest{s: s})
	return &p.dirty[len(p.dirty)-1]
}
