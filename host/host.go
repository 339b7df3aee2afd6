// Package host runs one colibri host: its VMs, the polled datapath that
// connects them (switches, uplinks, pollers) and the central vCPU
// scheduler that places their vCPUs, with VMs created, started, paused,
// resumed, stopped and deleted while the others run. It is the Go API for
// embedding colibri; `colibri up` and `colibri agent` are its users.
//
// A Host is built from the host part of a [spec.File] (pollers, sched,
// switches); VMs are added with [Host.CreateVM] from a [spec.VM], checked
// against the host's switches and other VMs as an up file's VMs are.
// Every VM of the host shares the one datapath and the one scheduler.
//
// All methods are safe for concurrent use. Lifecycle operations on one VM
// are serialised; reading a VM's state, info and counters never waits for
// one.
package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/logattr"
	"github.com/colibrivm/colibri/sched"
	"github.com/colibrivm/colibri/sched/cgroup"
	"github.com/colibrivm/colibri/sched/observer"
)

// Config configures a Host.
type Config struct {
	// Spec holds the host settings: pollers, sched and switches. Its VMs
	// are not started: create them with CreateVM.
	Spec spec.File
	// Scheduler forces a scheduler even when Spec.Sched asks for none
	// (policy linux and no cores), so that the policy can change later.
	Scheduler bool
	// DefaultKernel returns the kernel (and initrd) booted by VMs that
	// name no kernel, or why there is none; nil means there is none.
	DefaultKernel func() (kernel, initrd string, err error)
	// DefaultCmdline is the command line of VMs that give none.
	DefaultCmdline string
	// ConsoleSink, if set, returns where a VM's console output goes
	// besides the host's buffer when the VM names no console file (up
	// prints it, prefixed). Called once per VM.
	ConsoleSink func(vm string) io.Writer
	// ConsoleBuffer is how many bytes of each console the host keeps
	// (default DefaultConsoleBuffer).
	ConsoleBuffer int
	// CgroupParent is the parent of this process's cgroup (default
	// "colibri").
	CgroupParent string
	// KVMDevice is the KVM device (default /dev/kvm).
	KVMDevice string
	// StopTimeout is how long a graceful stop waits for the guest to shut
	// down before it is forced (default 30s; a Stop may give its own).
	StopTimeout time.Duration
	// Logger receives the host's events; nil discards them.
	Logger *slog.Logger
	// Confine, if set, confines the process once the host is set up
	// (seccomp filters; DropPrivileges switches the user).
	Confine *Confinement
}

// DefaultStopTimeout is Config.StopTimeout's default.
const DefaultStopTimeout = 30 * time.Second

// Host is one running colibri host.
type Host struct {
	cfg Config
	log *slog.Logger
	ctx context.Context
	// stop ends ctx: the scheduler, the pollers, every VM still running.
	stop context.CancelFunc

	net *datapath

	sched      *sched.Scheduler
	schedDone  chan error
	schedCores []int
	obs        *observer.Observer
	obsErr     error // why there is no observer
	cgroups    *cgroup.Manager
	polMu      sync.Mutex
	policy     PolicySpec

	ev events

	mu       sync.Mutex
	file     spec.File // the host settings and the VMs it has now
	vms      map[string]*VM
	creating map[string]bool // names of VMs being created
	seqVMs   uint64
	closed   bool

	// closers release what New opened, in reverse order.
	closers []func() error
}

// New builds the host cfg describes and starts its datapath and
// scheduler. It stops when ctx ends or Close is called; Close must be
// called in either case.
func New(ctx context.Context, cfg Config) (_ *Host, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "colibri"
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	file := cfg.Spec
	file.VMs = nil
	file.Normalize()
	if err := file.ValidateHost(); err != nil {
		return nil, err
	}
	if err := checkCoresAvailable(&file); err != nil {
		return nil, err
	}
	h := &Host{cfg: cfg, log: cfg.Logger, file: file, vms: map[string]*VM{}}
	h.ctx, h.stop = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			h.release()
		}
	}()
	if h.net, err = newDatapath(file.Pollers, h.log); err != nil {
		return nil, err
	}
	h.closers = append(h.closers, h.net.close)
	for _, s := range file.Switches {
		if err := h.net.addSwitch(s); err != nil {
			return nil, err
		}
	}
	if err := h.setupSched(); err != nil {
		return nil, err
	}
	h.housekeep()
	if err := h.confineProcess(); err != nil { // the process-wide syscall filter, before the threads that stack theirs
		return nil, err
	}
	if err := h.net.stack.Start(h.ctx); err != nil {
		return nil, fmt.Errorf("netstack: %w", err)
	}
	if h.sched != nil {
		h.schedDone = make(chan error, 1)
		go func() { h.schedDone <- h.sched.Run(h.ctx) }()
	}
	return h, nil
}

// setupSched creates the scheduler, its observer and the VMs' cgroups,
// unless the host asks for none (policy linux on unspecified cores).
func (h *Host) setupSched() error {
	sc := h.file.Sched
	if sc.Policy == spec.PolicyLinux && len(sc.Cores) == 0 && !h.cfg.Scheduler {
		return nil
	}
	cores := sc.Cores
	if len(cores) == 0 {
		var err error
		if cores, err = coresExcept(h.file.Pollers.Cores); err != nil {
			return fmt.Errorf("sched: %w", err)
		}
	}
	h.schedCores = cores
	ps := PolicySpec{Name: sc.Policy, Threshold: sc.Threshold, Quantum: sc.Quantum, Grace: sc.Grace}
	policy, err := ps.build()
	if err != nil {
		return fmt.Errorf("sched: %w", err)
	}
	// The observer serves the policies that need it and the vCPUs'
	// run-time and wait-time counters: have it wherever it can load.
	obs, err := observer.New(observer.Options{ManagedCPUs: cores})
	if err != nil {
		if needsObserver(sc.Policy) {
			return fmt.Errorf("sched: the %s policy needs the eBPF observer: %w", sc.Policy, err)
		}
		h.obsErr = err
		h.log.Warn("sched: no eBPF observer: vCPU run and wait times are not measured", logattr.Err(err))
	} else {
		h.obs = obs
		h.closers = append(h.closers, obs.Close)
	}
	mode, err := sched.ParseMode(sc.Mode)
	if err != nil {
		return fmt.Errorf("sched: %w", err)
	}
	cfg := sched.Config{Cores: cores, SchedCPU: -1, FIFOPriority: sc.FIFO, Policy: policy, Mode: mode, Period: sc.Period}
	if sc.CPU != nil {
		cfg.SchedCPU = *sc.CPU
	}
	if h.obs != nil {
		cfg.Observer = h.obs
	}
	s, err := sched.New(cfg)
	if err != nil {
		return fmt.Errorf("sched: %w", err)
	}
	h.sched = s
	h.policy = ps
	if stale, err := cgroup.CleanStale(h.cfg.CgroupParent); err == nil && len(stale) > 0 {
		h.log.Warn("removed cgroups a dead colibri left behind", slog.Any("groups", stale))
	}
	cg, err := cgroup.Open(h.cfg.CgroupParent)
	if err != nil {
		return fmt.Errorf("sched: %w", err)
	}
	h.cgroups = cg
	h.closers = append(h.closers, cg.Close)
	return nil
}

// release closes what New opened, in reverse order.
func (h *Host) release() {
	h.stop()
	if h.schedDone != nil {
		if err := <-h.schedDone; err != nil && !errors.Is(err, context.Canceled) {
			h.log.Warn("scheduler", logattr.Err(err))
		}
		h.schedDone = nil
	}
	for i := len(h.closers) - 1; i >= 0; i-- {
		if err := h.closers[i](); err != nil {
			h.log.Warn("cleanup", logattr.Err(err))
		}
	}
	h.closers = nil
	h.ev.closeAll()
}

// Close stops every VM — gracefully, each within ctx or the host's stop
// timeout, then by force — deletes them, and releases the datapath, the
// scheduler, the cgroups and the devices. It returns once all of it is
// gone. Close is idempotent.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	vms := h.sortedVMs()
	h.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(vms))
	for i, v := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v.State().Allows(OpStop) {
				if err := v.Stop(ctx, StopOptions{}); err != nil && !errors.Is(err, ErrState) {
					errs[i] = err
				}
			}
			if err := h.delete(v, true); err != nil && !errors.Is(err, ErrNotFound) {
				errs[i] = errors.Join(errs[i], err)
			}
		}()
	}
	wg.Wait()
	h.release()
	return errors.Join(errs...)
}

// Done is closed when the host's context ends (Close, or New's ctx).
func (h *Host) Done() <-chan struct{} { return h.ctx.Done() }

// Subscribe returns a subscription to the host's events from now on.
func (h *Host) Subscribe() *Subscription { return h.ev.subscribe() }

// publish emits an event and logs it.
func (h *Host) publish(ev Event) {
	ev = h.ev.publish(ev)
	h.log.Info("event", slog.String("type", string(ev.Type)), slog.String("vm", ev.VM),
		slog.String("state", string(ev.State)), slog.String("reason", ev.Reason))
}

// VM returns the VM named name.
func (h *Host) VM(name string) (*VM, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vms[name]
	if !ok {
		return nil, fmt.Errorf("VM %q: %w", name, ErrNotFound)
	}
	return v, nil
}

// VMs returns the host's VMs in the order they were created.
func (h *Host) VMs() []*VM {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sortedVMs()
}

func (h *Host) sortedVMs() []*VM {
	vms := make([]*VM, 0, len(h.vms))
	for _, v := range h.vms {
		vms = append(vms, v)
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].seq < vms[j].seq })
	return vms
}

// Spec returns the host's settings and its VMs as they stand.
func (h *Host) Spec() spec.File {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.file
	f.VMs = slices.Clone(f.VMs)
	return f
}

// totals returns the observer's counters of thread tid, if it is watched.
func (h *Host) totals(tid int) (observer.ThreadTotals, bool) {
	if h.obs == nil || tid == 0 {
		return observer.ThreadTotals{}, false
	}
	slot, ok := h.obs.Slot(tid)
	if !ok {
		return observer.ThreadTotals{}, false
	}
	return h.obs.Totals(slot), true
}

// availableCores lists the CPUs this process may run on.
func availableCores() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	var cores []int
	for c := 0; c < len(set)*64; c++ {
		if set.IsSet(c) {
			cores = append(cores, c)
		}
	}
	return cores, nil
}

// checkCoresAvailable refuses pollers.cores, sched.cores or sched.cpu
// naming a CPU this process cannot run on (offline, or outside its
// affinity).
func checkCoresAvailable(file *spec.File) error {
	avail, err := availableCores()
	if err != nil {
		return err
	}
	check := []struct {
		name  string
		cores []int
	}{{"pollers.cores", file.Pollers.Cores}, {"sched.cores", file.Sched.Cores}}
	if file.Sched.CPU != nil {
		check = append(check, struct {
			name  string
			cores []int
		}{"sched.cpu", []int{*file.Sched.CPU}})
	}
	for _, f := range check {
		for _, c := range f.cores {
			if !slices.Contains(avail, c) {
				return &spec.Error{Path: f.name, Msg: fmt.Sprintf("CPU %d is not available to this process (available: %v)", c, avail)}
			}
		}
	}
	return nil
}

// coresExcept lists the CPUs this process may run on minus skip.
func coresExcept(skip []int) ([]int, error) {
	avail, err := availableCores()
	if err != nil {
		return nil, err
	}
	var cores []int
	for _, c := range avail {
		if !slices.Contains(skip, c) {
			cores = append(cores, c)
		}
	}
	if len(cores) == 0 {
		return nil, errors.New("no core left for the vCPUs once the pollers have theirs")
	}
	return cores, nil
}
