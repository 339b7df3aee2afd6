package netstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/gomaxprocs"
	"github.com/colibrivm/colibri/internal/osthread"
)

// Defaults for Config's zero values.
const (
	DefaultIdleAfter    = 200 * time.Microsecond
	DefaultMaxIdleAfter = 20 * time.Millisecond
	DefaultBatch        = 32
	// DefaultTxNoticeDelay is how long a poller holds a transmit
	// completion notice back (Config.TxNoticeDelay).
	DefaultTxNoticeDelay = time.Millisecond
	// DefaultSharedIdleAfter is a shared poller's spin when IdleAfter is
	// 0: none, it sleeps after its first empty pass. While a poller
	// spins the guests do not kick, so on a core it shares a frame sent
	// when the core's scheduler has just handed the core to a vCPU
	// waits until the poller's next turn (up to a scheduler slice); a
	// sleeping poller is woken by the kick at once. 1-CPU sandbox,
	// netbench, three runs each, alternating: TCP 2.9-13.1 MiB/s and
	// RTT p50 2.2-3.0 ms against 2.8-4.7 MiB/s and 3.1-3.9 ms spinning
	// 200 µs (docs/PERF.md, table 7).
	DefaultSharedIdleAfter = 0
)

// Sharing says whether pollers have their cores to themselves.
type Sharing int

const (
	// SharingAuto treats a poller as shared when it is unpinned or the
	// host has one CPU, and as dedicated otherwise (pinned pollers'
	// cores are kept apart from the guests' by the caller).
	SharingAuto Sharing = iota
	// SharingDedicated: each poller owns its core.
	SharingDedicated
	// SharingShared: guests' vCPUs (or other busy threads) run on the
	// pollers' cores too.
	SharingShared
)

// Config configures a Stack.
type Config struct {
	// PollerCores lists the host CPUs the pollers run on, one poller per
	// entry, each pinned to its core. When empty, Pollers unpinned pollers
	// are started instead.
	PollerCores []int
	// Pollers is the number of unpinned pollers when PollerCores is empty;
	// 0 means 1.
	Pollers int
	// IdleAfter is how long a poller polls without finding a frame before
	// it re-arms its endpoints' notifications and sleeps, at least. 0
	// means DefaultIdleAfter for a dedicated poller and
	// DefaultSharedIdleAfter for a shared one; a negative value means
	// never sleep.
	IdleAfter time.Duration
	// MaxIdleAfter is how long a poller may poll without frames before it
	// sleeps when its recent sleeps were short: the spin doubles, from
	// IdleAfter up to MaxIdleAfter, after each wake-up that came sooner
	// than MaxIdleAfter, and halves after a longer sleep (as KVM's halt
	// polling adapts), so traffic whose gaps are shorter than
	// MaxIdleAfter (request-response) stops paying for wake-ups (the
	// guests' kicks, epoll). 0 means DefaultMaxIdleAfter (20 ms: on a
	// core of its own, spinning costs nothing else) for a dedicated
	// poller and IdleAfter (no growth: measured slower, with the guests'
	// vCPUs on the same core) for a shared one.
	MaxIdleAfter time.Duration
	// NoSpin makes every poller sleep after each pass that found nothing,
	// whatever IdleAfter and MaxIdleAfter say: the guests' kicks wake it.
	// It costs a wake-up per burst and saves the spinning core's time
	// (on a host whose cores are themselves shared, as in a nested or
	// emulated VM, that time is another CPU's).
	NoSpin bool
	// Sharing says whether the pollers share their cores with the guests'
	// vCPUs. A shared poller calls sched_yield after every pass that
	// found nothing, so a vCPU waiting for the core runs at once rather
	// than after the poller's spin. The zero value is SharingAuto.
	Sharing Sharing
	// Batch is the most frames taken from one endpoint per Transmit call;
	// 0 means DefaultBatch.
	Batch int
	// TxNoticeDelay is how long a poller may hold back the notice that
	// tells a sender its transmitted frames are done (TxCompleter: for a
	// virtio NIC, an interrupt), after a pass that took fewer than a
	// batch of frames from it. The notice is then sent only if the
	// sender still asks for it: a driver that freed those buffers
	// meanwhile (Linux's virtio-net does when a received frame
	// interrupts it, or on its next transmit) has moved its used_event
	// on and is not interrupted at all. Sent at once, the notice lands
	// as the guest's vCPU goes idle after its kick, where it costs a
	// host IPI, a halt and an interrupt-window exit. A pass that takes a
	// full batch, a poller about to sleep, and an endpoint leaving the
	// poller send what is held. 0 means DefaultTxNoticeDelay; a negative
	// value sends every notice at once.
	TxNoticeDelay time.Duration
	// Logger receives the stack's rare events; nil means no logging.
	Logger *slog.Logger
	// OnWake, if set, is called on a poller's thread right after it
	// returns from sleeping (epoll_wait), with the poller's index; use it
	// to measure wake-up latency. It must be quick and must not call back
	// into the Stack.
	OnWake func(poller int)
}

// Stack runs the datapath: pollers, each an OS thread pinned to a core,
// that drain the transmit side of the endpoints of every attached
// Switch's ports and switch the frames.
type Stack struct {
	cfg Config
	// idleDefault: Config.IdleAfter was left 0 (shared pollers then
	// take DefaultSharedIdleAfter).
	idleDefault bool
	log         *slog.Logger
	pollers     []*poller

	stopping atomic.Bool
	// gen moves on every endpoint replacement that drops slots; pollers
	// acknowledge it (poller.seen) between passes.
	gen  atomic.Uint64
	done chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex // guards everything below and endpoint assignment
	state    int
	switches []*Switch
	// draining counts, per endpoint, the replacements that took it from
	// its poller and have not yet seen the pollers quiesce: until then
	// no other port may take it.
	draining map[Endpoint]int
}

const (
	stateNew = iota
	stateRunning
	stateClosed
)

// New returns a stopped Stack with its pollers' epoll and control
// eventfds created; Start runs it. Close releases it.
func New(cfg Config) (*Stack, error) {
	idleDefault := cfg.IdleAfter == 0
	if idleDefault {
		cfg.IdleAfter = DefaultIdleAfter
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.TxNoticeDelay == 0 {
		cfg.TxNoticeDelay = DefaultTxNoticeDelay
	}
	cores := cfg.PollerCores
	if len(cores) == 0 {
		n := max(cfg.Pollers, 1)
		cores = make([]int, n)
		for i := range cores {
			cores[i] = -1
		}
	}
	st := &Stack{cfg: cfg, idleDefault: idleDefault, log: cfg.Logger, done: make(chan struct{}), draining: make(map[Endpoint]int)}
	if st.log == nil {
		st.log = slog.New(slog.DiscardHandler)
	}
	for i, core := range cores {
		p, err := newPoller(st, i, core)
		if err != nil {
			for _, q := range st.pollers {
				q.closeFDs()
			}
			return nil, err
		}
		st.pollers = append(st.pollers, p)
	}
	return st, nil
}

// AddSwitch attaches sw to the stack: its ports' endpoints, present and
// future, are served by the stack's pollers. A switch belongs to at most
// one stack.
func (st *Stack) AddSwitch(sw *Switch) error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.stack != nil {
		return fmt.Errorf("attach switch %s: already attached to a stack", sw.name)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.state == stateClosed {
		return fmt.Errorf("attach switch %s: stack closed", sw.name)
	}
	ports := *sw.ports.Load()
	for _, port := range ports {
		for _, s := range port.eps.Load().slots {
			if by := st.servedBy(s.ep); by != "" {
				// Never one endpoint served through two slots.
				return fmt.Errorf("attach switch %s: port %s: %w (%s)", sw.name, port.name, errInUse, by)
			}
		}
	}
	sw.stack = st
	st.switches = append(st.switches, sw)
	var errs []error
	for _, port := range ports {
		for _, s := range port.eps.Load().slots {
			errs = append(errs, st.assign(s))
		}
	}
	st.kickAll()
	return errors.Join(errs...)
}

// Switches returns the attached switches.
func (st *Stack) Switches() []*Switch {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]*Switch(nil), st.switches...)
}

// Start starts the pollers and returns once each runs on its core. They
// stop when ctx is cancelled or Close is called; Close must be called in
// either case to release the stack.
func (st *Stack) Start(ctx context.Context) error {
	st.mu.Lock()
	if st.state != stateNew {
		st.mu.Unlock()
		return errors.New("start netstack: already started or closed")
	}
	st.state = stateRunning
	ready := make(chan error, len(st.pollers))
	for _, p := range st.pollers {
		st.wg.Add(1)
		osthread.Go(func() {
			defer st.wg.Done()
			// A polling thread holds a Go P: without one more, the rest
			// of the process (vCPU exits, the API, the consoles) would
			// share one P fewer, and Go would preempt the poller to run
			// them.
			defer gomaxprocs.Reserve(1)()
			p.run(ready)
		})
	}
	st.mu.Unlock()
	var errs []error
	for range st.pollers {
		if err := <-ready; err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		_ = st.Close()
		return fmt.Errorf("start netstack: %w", err)
	}
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		select {
		case <-ctx.Done():
			st.stop()
		case <-st.done:
		}
	}()
	st.log.Info("netstack started", slog.Int("pollers", len(st.pollers)),
		slog.Duration("idle_after", st.cfg.IdleAfter), slog.Int("batch", st.cfg.Batch))
	return nil
}

// Run starts the stack, serves until ctx is cancelled, then closes it.
func (st *Stack) Run(ctx context.Context) error {
	if err := st.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return st.Close()
}

// stop asks every poller to exit, without waiting.
func (st *Stack) stop() {
	st.stopping.Store(true)
	st.kickAll()
}

// Close stops the pollers, waits for their threads to exit and closes the
// stack's file descriptors. Endpoints are not closed: they belong to the
// caller. Close is idempotent.
func (st *Stack) Close() error {
	st.mu.Lock()
	if st.state == stateClosed {
		st.mu.Unlock()
		return nil
	}
	st.state = stateClosed
	st.stopping.Store(true)
	st.kickAll()
	close(st.done)
	st.mu.Unlock()
	st.wg.Wait()
	var errs []error
	for _, p := range st.pollers {
		errs = append(errs, p.closeFDs())
	}
	return errors.Join(errs...)
}

// kickAll wakes every poller.
func (st *Stack) kickAll() {
	for _, p := range st.pollers {
		p.kick()
	}
}

// assign gives slot s to the poller owning the fewest endpoints (the
// lowest index among equals, so a fresh stack assigns round-robin).
// Called with st.mu held, and never after Close.
func (st *Stack) assign(s *epSlot) error {
	best := st.pollers[0]
	for _, p := range st.pollers[1:] {
		if p.nOwned < best.nOwned {
			best = p
		}
	}
	return best.add(s)
}

// replace makes set port p's endpoints: slots in gone are taken from
// their pollers, fresh ones assigned (slots in both sets stay with their
// poller). It returns once no poller can still be inside a method of a
// gone slot's endpoint, and reports whether it changed anything: it
// refuses, changing nothing, a fresh endpoint that another port of the
// stack serves. Called with p's switch's mu held.
func (st *Stack) replace(p *Port, set *epSet, gone, fresh []*epSlot) (bool, error) {
	st.mu.Lock()
	if st.state == stateClosed {
		p.eps.Store(set)
		st.mu.Unlock()
		return true, nil
	}
	for _, s := range fresh {
		if by := st.servedBy(s.ep); by != "" {
			st.mu.Unlock()
			return false, fmt.Errorf("%w (%s)", errInUse, by)
		}
	}
	// Deliveries go to the new set from now on; then the dropped slots
	// leave their pollers, and quiescence below waits out any poller
	// still inside one of them (from a list or a set it loaded before).
	p.eps.Store(set)
	var errs []error
	for _, s := range gone {
		if o := s.owner.Load(); o != nil {
			o.remove(s)
		}
		st.draining[s.ep]++
	}
	for _, s := range fresh {
		errs = append(errs, st.assign(s))
	}
	st.kickAll()
	st.mu.Unlock()
	if len(gone) == 0 {
		return true, errors.Join(errs...)
	}
	gen := st.gen.Add(1)
	for _, q := range st.pollers {
		q.quiesce(gen)
	}
	st.mu.Lock()
	for _, s := range gone {
		if st.draining[s.ep]--; st.draining[s.ep] == 0 {
			delete(st.draining, s.ep)
		}
	}
	st.mu.Unlock()
	return true, errors.Join(errs...)
}

// servedBy names the port whose poller serves ep, or may still be inside
// it (a replacement that dropped it has not seen the pollers quiesce
// yet); "" when none. Called with st.mu held.
func (st *Stack) servedBy(ep Endpoint) string {
	if st.draining[ep] > 0 {
		return "a port releasing it"
	}
	for _, q := range st.pollers {
		for _, s := range *q.owned.Load() {
			if s.ep == ep {
				return "port " + s.port.sw.name + "/" + s.port.name
			}
		}
	}
	return ""
}

// PollerTIDs returns the thread ids of the running pollers (0 for one not
// started), e.g. to exclude them from a scheduler's cores.
func (st *Stack) PollerTIDs() []int {
	tids := make([]int, len(st.pollers))
	for i, p := range st.pollers {
		tids[i] = int(p.tid.Load())
	}
	return tids
}

func newEventfd() (int, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("eventfd: %w", err)
	}
	return fd, nil
}
