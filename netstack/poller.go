package netstack

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/logattr"
	"github.com/colibrivm/colibri/internal/osthread"
	"github.com/colibrivm/colibri/internal/seccomp"
	"github.com/colibrivm/colibri/internal/vnet"
)

// poller is one polling thread. Fields after "thread-only" are touched
// only by the poller's own thread.
type poller struct {
	st    *Stack
	index int
	core  int // -1: unpinned
	// shared is true when the poller shares its core with other busy
	// threads (Config.Sharing): when it spins, it then yields the core on
	// every pass that finds nothing.
	shared bool
	epfd   int
	ctlfd  int
	// ctlSent is set before each control message written to ctlfd, and
	// cleared when sleep drains the readiness left from while polling.
	ctlSent atomic.Bool
	tid     atomic.Int32

	// seen is the stack generation (Stack.gen) the poller last read at
	// the start of a pass or on waking: it is outside every endpoint
	// method it entered before reading it. idle is true while it is
	// outside all of them for an unbounded time (asleep in epoll_wait,
	// not started, stopped). quiesce waits for one or the other, so a
	// pass costs no locked instruction of its own.
	seen  atomic.Uint64
	idle  atomic.Bool
	owned atomic.Pointer[[]*epSlot]
	// nOwned is len(*owned), guarded by Stack.mu.
	nOwned int
	cnt    pollerCounters

	// thread-only
	batch int
	// txDelay is Config.TxNoticeDelay in nanoseconds (<= 0: no delay);
	// txHeld counts the slots of list whose txDue is set.
	txDelay int64
	txHeld  int
	list    []*epSlot
	fn      func([]byte, vnet.Offload)
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
	// gen is what seen holds; polls and empty count passes not yet added
	// to cnt (published every publishEvery passes and before sleeping).
	gen          uint64
	polls, empty uint64
	// spin is how long the poller now polls without frames before it
	// sleeps: between minSpin (Config.IdleAfter, or
	// DefaultSharedIdleAfter) and maxSpin (Config.MaxIdleAfter), doubled
	// after a short sleep and halved after a long one.
	spin, minSpin, maxSpin int64
	// rxArmed lists the owned slots whose receivers were asked to
	// notify (ArmRx) before the last sleep.
	rxArmed []*epSlot
}

// publishEvery is how many passes a poller counts locally before adding
// them to its counters (a power of two).
const publishEvery = 1024

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
	spin                        atomic.Int64
}

func newPoller(st *Stack, index, core int) (*poller, error) {
	p := &poller{st: st, index: index, core: core, epfd: -1, ctlfd: -1,
		batch: st.cfg.Batch, txDelay: int64(st.cfg.TxNoticeDelay), events: make([]unix.EpollEvent, 64),
		dirty: make([]dirtyDest, 0, 64), spin: int64(st.cfg.IdleAfter)}
	switch st.cfg.Sharing {
	case SharingShared:
		p.shared = true
	case SharingAuto:
		p.shared = core < 0 || runtime.NumCPU() == 1
	}
	if p.shared && st.idleDefault {
		p.spin = int64(DefaultSharedIdleAfter)
	}
	p.minSpin = p.spin
	switch {
	case st.cfg.MaxIdleAfter > 0:
		p.maxSpin = max(int64(st.cfg.MaxIdleAfter), p.spin)
	case p.shared:
		p.maxSpin = p.spin
	default:
		p.maxSpin = max(int64(DefaultMaxIdleAfter), p.spin)
	}
	if st.cfg.NoSpin {
		p.spin, p.minSpin, p.maxSpin = 0, 0, 0
	}
	p.idle.Store(true)
	p.cnt.spin.Store(p.spin)
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
	p.ctlSent.Store(true)
	one := [8]byte{1}
	_, _ = unix.Write(p.ctlfd, one[:])
}

// add makes p the owner of s and registers its wait fd. Called with
// Stack.mu held.
func (p *poller) add(s *epSlot) error {
	s.owner.Store(p)
	old := *p.owned.Load()
	list := make([]*epSlot, len(old), len(old)+1)
	copy(list, old)
	var errs []error
	register := func(fd int, what string) int {
		if fd < 0 {
			return -1
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}
		if e := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); e != nil {
			errs = append(errs, fmt.Errorf("poller %d: register %s fd %d of port %s/%s: %w",
				p.index, what, fd, s.port.sw.name, s.port.name, e))
			return -1
		}
		return fd
	}
	s.fd = register(s.ep.WaitFD(), "wait")
	if s.rxw != nil {
		s.rxfd = register(s.rxw.RxWaitFD(), "receive wait")
	}
	err := errors.Join(errs...)
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
	for _, fd := range []int{s.fd, s.rxfd} {
		if fd >= 0 {
			// The owner may already have closed the fd, which unregistered it.
			_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
	}
	s.owner.Store(nil)
	p.nOwned = len(list)
	p.owned.Store(&list)
}

// quiesce returns once p is outside any endpoint method it may have
// entered before the stack's generation reached gen (Stack.gen.Add).
func (p *poller) quiesce(gen uint64) {
	for spins := 0; p.seen.Load() < gen && !p.idle.Load(); spins++ {
		if spins < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(10 * time.Microsecond)
		}
	}
}

// ack acknowledges the stack's generation: everything the poller did
// before is done, and what it loads next (owned lists, ports' endpoint
// sets) is at least as new as that generation. A plain load unless the
// generation moved.
func (p *poller) ack() {
	if g := p.st.gen.Load(); g != p.gen {
		// Once acknowledged, endpoints may leave the list: what is held
		// for them goes now.
		p.sendHeldTx()
		p.gen = g
		p.seen.Store(g)
	}
}

// publish adds the passes counted locally to the poller's counters.
func (p *poller) publish() {
	if p.polls != 0 {
		p.cnt.polls.Add(p.polls)
		p.cnt.emptyPolls.Add(p.empty)
		p.polls, p.empty = 0, 0
	}
}

func monoNanos() int64 { return int64(time.Since(monoEpoch)) }

var monoEpoch = time.Now()

// run is the poller thread's body. It reports on ready once the thread
// is set up.
func (p *poller) run(ready chan<- error) {
	osthread.SetName(fmt.Sprintf("poller%d", p.index))
	// On a thread of its own (osthread.Go): its affinity is changed, so it
	// exits with the goroutine instead of returning to Go's thread pool.
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
	p.idle.Store(false)
	defer p.idle.Store(true)
	idleAfter := int64(p.st.cfg.IdleAfter)
	var list *[]*epSlot
	var idleSince int64 // 0: found work in the last pass
	for {
		p.ack()
		if p.st.stopping.Load() {
			p.publish()
			p.sendHeldTx()
			return
		}
		if l := p.owned.Load(); l != list {
			p.sendHeldTx()
			list = l
			p.list = *l
			for _, s := range *l {
				s.ep.Disarm()
			}
		}
		n, work := p.pass(*list)
		p.polls++
		if n > 0 {
			p.cnt.frames.Add(n)
		}
		if work {
			idleSince = 0
			if p.polls >= publishEvery {
				p.publish()
			}
			continue
		}
		p.empty++
		if p.polls >= publishEvery {
			p.publish()
		}
		if p.spin == 0 && idleAfter >= 0 {
			// No spin: sleep now. sleep's arming finds frames that came
			// meanwhile, so a second empty pass (and a sched_yield
			// before it) would only add system calls to every wake-up.
			p.publish()
			p.sendHeldTx()
			p.sleep()
			continue
		}
		if p.shared {
			// Whoever waits for this core (a guest's vCPU) runs now,
			// not when the spin below ends.
			_, _, _ = unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		}
		if idleAfter < 0 {
			continue
		}
		now := monoNanos()
		if idleSince == 0 {
			idleSince = now
			continue
		}
		if now-idleSince >= p.spin {
			p.publish()
			p.sendHeldTx()
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

// pass drains each owned endpoint once, up to a batch each, after
// retrying the frames held for its receive side. It returns how many
// frames it took from transmit sides, and whether it moved any frame
// (taken, or delivered from a hold queue).
func (p *poller) pass(list []*epSlot) (uint64, bool) {
	var total uint64
	work := false
	for _, s := range list {
		if s.holding.Load() {
			p.lock(s)
			if p.drainHeld(s) > 0 {
				work = true
			}
			p.flush()
		}
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
		if s.txc != nil {
			// The sender's completion notice (an interrupt: a system
			// call) comes with no destination's lock held.
			p.completeTx(s, p.rxPkts)
		}
	}
	p.cur = nil
	return total, work || total > 0
}

// completeTx sends s's transmit completion notice, or holds it back for
// Config.TxNoticeDelay after a pass that took frames but not a full
// batch (a sender that fills its batches gets its notices at once).
func (p *poller) completeTx(s *epSlot, took uint64) {
	if p.txDelay <= 0 || took >= uint64(p.batch) {
		if s.txDue != 0 {
			s.txDue = 0
			p.txHeld--
		}
		s.txc.CompleteTx()
		return
	}
	if s.txDue == 0 {
		if took == 0 {
			// Nothing new, nothing held: chains Transmit returned
			// without a frame (malformed ones) are noticed here.
			s.txc.CompleteTx()
			return
		}
		s.txDue = monoNanos() + p.txDelay
		p.txHeld++
		return
	}
	if monoNanos() >= s.txDue {
		s.txDue = 0
		p.txHeld--
		s.txc.CompleteTx()
	}
}

// sendHeldTx sends every completion notice held for the poller's
// endpoints.
func (p *poller) sendHeldTx() {
	if p.txHeld == 0 {
		return
	}
	for _, s := range p.list {
		if s.txDue != 0 {
			s.txDue = 0
			s.txc.CompleteTx()
		}
	}
	p.txHeld = 0
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
	p.unlockHeld()
}

// lock makes s the one destination whose lock p holds. p keeps it from
// frame to frame while they go to s (one lock and one Flush for a run of
// them), and lets go of it as soon as a frame goes elsewhere or nowhere,
// and before the source's completion work (TxCompleter).
func (p *poller) lock(s *epSlot) {
	if p.held == s {
		return
	}
	p.unlockHeld()
	s.mu.Lock()
	p.held = s
}

// unlockHeld releases the held destination lock, if any.
func (p *poller) unlockHeld() {
	if p.held != nil {
		p.held.mu.Unlock()
		p.held = nil
	}
}

// sleep arms every owned endpoint (and the receivers of those holding
// frames for want of buffers) and waits on their fds, unless one has
// frames already. It returns once the poller should poll again.
func (p *poller) sleep() {
	// Drop readiness left from while polling: after this, only events
	// that follow arming wake the poller, and Arm reports anything that
	// arrived in between. Only after a control message: while the poller
	// polls the guests are told not to kick, so a kick left over is rare
	// (it costs one more pass), where this wait would be a system call on
	// every sleep.
	if p.ctlSent.Swap(false) {
		for {
			n, err := unix.EpollWait(p.epfd, p.events, 0)
			if err == unix.EINTR {
				continue
			}
			p.countKicks(p.events[:max(n, 0)])
			if err != nil || n < len(p.events) {
				break
			}
		}
	}
	p.ack()
	if p.st.stopping.Load() {
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
		if s.holding.Load() {
			// Frames wait for s's receive buffers: sleep until it posts
			// some (or poll for them when it cannot say).
			if s.rxw == nil || s.rxfd < 0 {
				timeout = 1
				continue
			}
			p.lock(s)
			if s.rxw.ArmRx() {
				busy = true
			}
			p.unlockHeld()
			p.rxArmed = append(p.rxArmed, s)
		}
	}
	if busy {
		p.wake(list)
		p.cnt.armRaces.Add(1)
		return
	}
	p.cnt.sleeps.Add(1)
	p.idle.Store(true)
	t0 := monoNanos()
	var n int
	var err error
	for {
		n, err = unix.EpollWait(p.epfd, p.events, timeout)
		if err != unix.EINTR {
			break
		}
	}
	slept := monoNanos() - t0
	p.idle.Store(false)
	p.ack()
	if p.st.cfg.OnWake != nil {
		p.st.cfg.OnWake(p.index)
	}
	p.cnt.sleepNanos.Add(uint64(slept))
	if err != nil {
		if p.cnt.waitErrors.Add(1) == 1 {
			p.st.log.Error("netstack poller: epoll_wait failed", slog.Int("poller", p.index), logattr.Err(err))
		}
	}
	ctl := false
	for _, ev := range p.events[:max(n, 0)] {
		if int(ev.Fd) == p.ctlfd {
			ctl = true
		}
	}
	p.countKicks(p.events[:max(n, 0)])
	p.cnt.wakeups.Add(1)
	if ctl {
		p.cnt.ctlWakeups.Add(1)
	} else {
		p.adapt(slept)
	}
	p.wake(*p.owned.Load())
}

// countKicks has each owned KickCounter whose wait fd is among events
// read its count.
func (p *poller) countKicks(events []unix.EpollEvent) {
	for _, ev := range events {
		if int(ev.Fd) == p.ctlfd {
			continue
		}
		for _, s := range *p.owned.Load() {
			if s.kc != nil && s.fd == int(ev.Fd) {
				s.kc.CountKicks()
				break
			}
		}
	}
}

// wake disarms the endpoints of list, and the receivers sleep armed, for
// polling again.
func (p *poller) wake(list []*epSlot) {
	for _, s := range list {
		s.ep.Disarm()
	}
	for i, s := range p.rxArmed {
		if s.owner.Load() == p { // still ours: not dropped meanwhile
			p.lock(s)
			s.rxw.DisarmRx()
			p.unlockHeld()
		}
		p.rxArmed[i] = nil
	}
	p.rxArmed = p.rxArmed[:0]
}

// adapt sets how long the poller spins before its next sleep from how
// long this one lasted (as KVM's halt polling does): a sleep shorter than
// the longest spin would have been saved by spinning longer, so the spin
// doubles; a longer one halves it, down to minSpin.
func (p *poller) adapt(slept int64) {
	lo, hi := p.minSpin, p.maxSpin
	switch {
	case hi <= lo:
		p.spin = lo
	case slept < hi:
		p.spin = min(2*p.spin, hi)
	default:
		p.spin = max(p.spin/2, lo)
	}
	p.cnt.spin.Store(p.spin)
}

// handle switches one frame transmitted by p.cur, with off pending.
func (p *poller) handle(frame []byte, off vnet.Offload) {
	if !p.switchFrame(frame, off) {
		// Delivered nowhere: keep no destination waiting meanwhile.
		p.unlockHeld()
	}
}

// switchFrame switches one frame and reports whether it was handed to a
// destination endpoint.
func (p *poller) switchFrame(frame []byte, off vnet.Offload) bool {
	src := p.cur.port
	p.rxPkts++
	p.rxBytes += uint64(len(frame))
	if len(frame) < ethHeaderLen {
		src.cnt.runt.Add(1)
		return false
	}
	if frame[6]&1 != 0 { // multicast source address
		src.cnt.badSource.Add(1)
		return false
	}
	srcKey := macKey(frame[6:12])
	if !src.allows(srcKey) { // a bound port sending as someone else
		src.cnt.spoofed.Add(1)
		return false
	}
	if off.Pending() && off.Check(len(frame)) != nil {
		src.cnt.badOffload.Add(1)
		return false
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
				return false
			}
			return p.deliver(dst, frame, off)
		}
	}
	sent := false
	for _, dst := range *sw.ports.Load() {
		if dst != src && p.deliver(dst, frame, off) {
			sent = true
		}
	}
	return sent
}

// deliver hands frame to one of dst's endpoints, chosen by flow hash: as
// it is when nothing is pending or the endpoint takes the offloads,
// finished in software otherwise. It reports whether an endpoint was
// there to take it.
func (p *poller) deliver(dst *Port, frame []byte, off vnet.Offload) bool {
	slots := dst.eps.Load().slots
	var s *epSlot
	switch len(slots) {
	case 0:
		if dst.paused.Load() {
			dst.cnt.paused.Add(1)
		} else {
			dst.cnt.portDown.Add(1)
		}
		return false
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
	if off.Pending() && (s.oep == nil || !s.oep.AcceptsOffload(off)) {
		p.finSlot = s
		if _, err := p.fin.Finish(frame, off, p.finSeg); err != nil {
			p.cur.port.cnt.badOffload.Add(1)
		} else {
			dst.cnt.softOffload.Add(1)
		}
		return true
	}
	p.put(s, frame, off)
	return true
}

// deliverFinished delivers one frame the finisher made to p.finSlot.
func (p *poller) deliverFinished(frame []byte) { p.put(p.finSlot, frame, vnet.Offload{}) }

// put delivers frame to s, whose lock p holds, behind any frames s holds
// for want of receive buffers.
func (p *poller) put(s *epSlot, frame []byte, off vnet.Offload) {
	if s.holding.Load() {
		// Older frames wait for s's buffers: they go first, and this one
		// waits behind them if they cannot.
		p.drainHeld(s)
		if s.holding.Load() {
			p.hold(s, frame, off)
			return
		}
	}
	var ok bool
	if off.Pending() {
		ok = s.oep.DeliverOffload(frame, off)
	} else {
		ok = s.ep.Deliver(frame)
	}
	if !ok {
		p.refused(s, frame, off)
		return
	}
	p.delivered(s, len(frame))
}

// refused handles a frame s's receive side did not take: held when the
// receiver only lacks buffers for now, dropped otherwise. Called with s
// locked.
func (p *poller) refused(s *epSlot, frame []byte, off vnet.Offload) {
	if s.rxw != nil && s.rxw.RxFull() {
		p.hold(s, frame, off)
		return
	}
	s.port.cnt.noRoom.Add(1)
}

// hold queues a copy of frame on s, to be delivered once s's receiver
// posts buffers; a full hold queue drops it. The first frame held wakes
// s's owner, which retries the queue on every pass and, asleep, waits for
// the receiver's notification. Called with s locked.
func (p *poller) hold(s *epSlot, frame []byte, off vnet.Offload) {
	if !s.hold.push(frame, off, s.port.sw.now()) {
		s.port.cnt.noRoom.Add(1)
		return
	}
	s.port.cnt.held.Add(1)
	if !s.holding.Load() {
		s.holding.Store(true)
		if o := s.owner.Load(); o != nil && o != p {
			o.kick()
		}
	}
}

// drainHeld delivers the frames s holds, oldest first, until its receive
// side is full again, and returns how many it delivered. Frames held
// longer than holdFor (expired) or refused for another reason than room
// (no room) are dropped. Called with s locked.
func (p *poller) drainHeld(s *epSlot) int {
	q := &s.hold
	now := s.port.sw.now()
	n := 0
	for q.len() > 0 {
		frame, e := q.peek()
		off := e.off
		if now-e.at > int64(holdFor) {
			q.pop()
			s.port.cnt.expired.Add(1)
			continue
		}
		var ok bool
		switch {
		case !off.Pending():
			ok = s.ep.Deliver(frame)
		case s.oep != nil:
			ok = s.oep.DeliverOffload(frame, off)
		}
		if !ok {
			if s.rxw != nil && s.rxw.RxFull() {
				break
			}
			q.pop()
			s.port.cnt.noRoom.Add(1)
			continue
		}
		p.delivered(s, len(frame))
		q.pop()
		n++
	}
	if q.len() == 0 {
		s.holding.Store(false)
	}
	return n
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
