package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/logattr"
	"github.com/colibrivm/colibri/kvm"
	"github.com/colibrivm/colibri/sched"
	"github.com/colibrivm/colibri/sched/cgroup"
	"github.com/colibrivm/colibri/vmm"
)

// VM is one VM of a host. Its methods are safe for concurrent use; the
// lifecycle ones (Start, Pause, Resume, Stop, Delete) are serialised.
type VM struct {
	h       *Host
	name    string
	seq     uint64
	spec    spec.VM
	class   sched.Class
	ports   []*guestPort
	console *Console
	file    *os.File // the console file, if the spec names one
	created time.Time
	tune    func(*vmm.Config)

	// op serialises lifecycle changes; it is never held while waiting for
	// the guest.
	op sync.Mutex

	mu        sync.Mutex
	state     State
	cur       *vmm.VM // the incarnation that runs or will run; nil once closed
	deleted   bool
	exit      *Exit
	restarts  int
	startedAt time.Time
	stopping  stopKind
	// done is closed when the run that Start began has ended for good.
	done chan struct{}
	// last are the counters of the latest incarnation, kept when it is
	// closed.
	last vmm.Stats
	// vcpus are the vCPUs registered with the scheduler now.
	vcpus []*vmm.VCPU
	group *cgroup.Group
	// past sums the observer's counters of earlier runs, by vCPU id.
	past map[int]pastTotals
}

// pastTotals are a vCPU's observer counters from runs that ended.
type pastTotals struct {
	RunTime, WaitTime time.Duration
	Preemptions       uint64
}

// stopKind is what a stop request asked for.
type stopKind int

const (
	stopNone stopKind = iota
	stopGraceful
	stopForced
)

// Exit says how a VM's run ended.
type Exit struct {
	// Kind is how it ended (power-off, reset, stopped, error, crash).
	Kind vmm.ExitKind
	// Err is the failure, for error and crash (a *vmm.CrashError).
	Err error
	// Forced is true when a stop request had to force it off.
	Forced bool
	// At is when it ended.
	At time.Time
}

// Status is the exit status a process supervisor would report: 0 when
// the guest powered off or rebooted (also after a graceful stop), 137
// when it was forced off, 1 when it failed.
func (e *Exit) Status() int {
	switch {
	case e.Kind.Failed():
		return 1
	case e.Forced || e.Kind == vmm.ExitStopped:
		return 137
	}
	return 0
}

// CreateVM adds a VM to the host: it checks s against the host's switches
// and VMs (filling in its defaults), creates its NICs' switch ports and
// the VM itself (guest memory, devices, the kernel loaded), in state
// created. Errors: a *spec.Error for a bad spec, ErrExists for a name in
// use, ErrClosed once the host closes, and what creating the VM met.
func (h *Host) CreateVM(s spec.VM, opts ...VMOption) (_ *VM, err error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := h.vms[s.Name]; ok || h.creating[s.Name] {
		h.mu.Unlock()
		return nil, fmt.Errorf("VM %q: %w", s.Name, ErrExists)
	}
	// The spec joins the host's at once, so that VMs created meanwhile
	// are checked against it (MACs, disks, consoles), and the name is
	// held while the slow part runs without the lock.
	norm, err := h.file.Add(s)
	if err != nil {
		h.mu.Unlock()
		return nil, err
	}
	if h.creating == nil {
		h.creating = map[string]bool{}
	}
	h.creating[norm.Name] = true
	h.mu.Unlock()

	v := &VM{h: h, name: norm.Name, spec: norm, class: sched.Batch, state: StateCreated, created: time.Now()}
	for _, o := range opts {
		o(v)
	}
	if norm.Class == spec.ClassLC {
		v.class = sched.LatencyCritical
	}
	defer func() {
		h.mu.Lock()
		delete(h.creating, v.name)
		if err != nil {
			h.file.Remove(v.name)
		} else if h.closed {
			err = ErrClosed
			h.file.Remove(v.name)
		} else {
			h.seqVMs++
			v.seq = h.seqVMs
			h.vms[v.name] = v
		}
		h.mu.Unlock()
		if err != nil {
			if v.cur != nil {
				v.cur.Close()
			}
			v.release()
			return
		}
		h.publish(Event{Type: EventCreated, VM: v.name, State: StateCreated})
	}()
	var sink io.Writer
	if norm.Console != "" {
		if v.file, err = os.Create(norm.Console); err != nil {
			return nil, fmt.Errorf("VM %s: console: %w", v.name, err)
		}
		sink = v.file
	} else if h.cfg.ConsoleSink != nil {
		sink = h.cfg.ConsoleSink(v.name)
	}
	v.console = newConsole(h.cfg.ConsoleBuffer, sink)
	for i, n := range norm.NICs {
		p, err := h.net.addGuestPort(n.Switch, v.name, i, n.MAC)
		if err != nil {
			return nil, fmt.Errorf("VM %s: nics[%d]: %w", v.name, i, err)
		}
		v.ports = append(v.ports, p)
	}
	if v.cur, err = v.newVMM(); err != nil {
		return nil, fmt.Errorf("VM %s: %w", v.name, err)
	}
	return v, nil
}

// VMOption adjusts a VM at CreateVM.
type VMOption func(*VM)

// WithVMMConfig lets f adjust the vmm.Config of each incarnation of the
// VM before it is created: what the spec does not describe (huge pages,
// a console on a terminal with its input, another KVM device). Changing
// what the spec sets (kernel, CPUs, memory, disks, NICs) is the caller's
// risk.
func WithVMMConfig(f func(*vmm.Config)) VMOption {
	return func(v *VM) { v.tune = f }
}

// newVMM creates an incarnation of the VM: memory, devices, kernel.
func (v *VM) newVMM() (*vmm.VM, error) {
	h, s := v.h, v.spec
	cfg := vmm.Config{
		Kernel: s.Kernel, Initrd: s.Initrd, Cmdline: s.Cmdline,
		CPUs: s.CPUs, MemSize: s.Mem, RNG: true, Console: v.console,
		KVMDevice: h.cfg.KVMDevice, Logger: h.log.With(slog.String("vm", v.name)),
	}
	if cfg.Kernel == "" {
		if h.cfg.DefaultKernel == nil {
			return nil, errors.New("no kernel given and the host has no default kernel")
		}
		kernel, initrd, err := h.cfg.DefaultKernel()
		if err != nil {
			return nil, err
		}
		cfg.Kernel = kernel
		if cfg.Initrd == "" {
			cfg.Initrd = initrd
		}
	}
	if cfg.Cmdline == "" {
		cfg.Cmdline = h.cfg.DefaultCmdline
	}
	if s.Append != "" {
		cfg.Cmdline += " " + s.Append
	}
	for _, d := range s.Disks {
		cfg.Disks = append(cfg.Disks, vmm.Disk{Path: d.Path, ReadOnly: d.ReadOnly, StopOnError: d.OnError == spec.ActionStop})
	}
	for i, n := range s.NICs {
		cfg.NICs = append(cfg.NICs, v.ports[i].nic(n.NoOffloads))
	}
	if v.tune != nil {
		v.tune(&cfg)
	}
	vm, err := vmm.New(cfg)
	if err != nil {
		if errors.Is(err, kvm.ErrNoKVM) {
			return nil, fmt.Errorf("%w (run colibri inside the KVM sandbox: scripts/kvm-sandbox)", err)
		}
		return nil, err
	}
	return vm, nil
}

// Name returns the VM's name.
func (v *VM) Name() string { return v.name }

// Spec returns the VM's spec with its defaults filled in.
func (v *VM) Spec() spec.VM { return v.spec }

// ReadGuest copies the guest's physical memory at addr into p, from the
// incarnation that runs or will run.
func (v *VM) ReadGuest(addr uint64, p []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cur == nil {
		return fmt.Errorf("VM %s has no guest memory now (it is %s)", v.name, v.state)
	}
	return v.cur.Memory().Read(addr, p)
}

// Console returns the VM's console output.
func (v *VM) Console() *Console { return v.console }

// State returns the VM's state.
func (v *VM) State() State {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.state
}

// setState changes the state and publishes it; called with mu held.
func (v *VM) setStateLocked(s State, reason string) {
	if v.state == s {
		return
	}
	prev := v.state
	v.state = s
	v.h.publish(Event{Type: EventState, VM: v.name, State: s, Previous: prev, Reason: reason})
}

// checkLocked returns the error for op in the current state, if any.
func (v *VM) checkLocked(op Op) error {
	if v.deleted {
		return fmt.Errorf("VM %q: %w", v.name, ErrNotFound)
	}
	if !v.state.Allows(op) {
		return stateError(v.name, op, v.state)
	}
	return nil
}

// Start boots the VM: from created, or again after it stopped or failed
// (a fresh boot from its kernel).
func (v *VM) Start() error {
	v.op.Lock()
	defer v.op.Unlock()
	v.mu.Lock()
	if err := v.checkLocked(OpStart); err != nil {
		v.mu.Unlock()
		return err
	}
	if v.h.ctx.Err() != nil {
		v.mu.Unlock()
		return ErrClosed
	}
	if v.cur == nil {
		v.mu.Unlock()
		cur, err := v.newVMM()
		if err != nil {
			return fmt.Errorf("VM %s: %w", v.name, err)
		}
		v.mu.Lock()
		v.cur = cur
	}
	cur := v.cur
	v.exit = nil
	v.stopping = stopNone
	v.startedAt = time.Now()
	v.done = make(chan struct{})
	v.setStateLocked(StateRunning, "started")
	v.mu.Unlock()
	go v.run(cur)
	return nil
}

// Restart limits: a VM restarted more than maxRestarts times within
// restartWindow is left stopped (a crash loop, a reboot loop).
const (
	maxRestarts   = 5
	restartWindow = time.Minute
)

// run runs incarnations of the VM until one ends for good.
func (v *VM) run(cur *vmm.VM) {
	var recent []time.Time
	for {
		kind, err := v.runOnce(cur)
		v.mu.Lock()
		restart := v.stopping == stopNone && v.h.ctx.Err() == nil &&
			(kind == vmm.ExitReset && v.spec.OnReboot == spec.ActionRestart ||
				kind == vmm.ExitCrash && v.spec.OnCrash == spec.ActionRestart)
		if restart {
			now := time.Now()
			for len(recent) > 0 && now.Sub(recent[0]) > restartWindow {
				recent = recent[1:]
			}
			if len(recent) >= maxRestarts {
				restart = false
				loop := fmt.Errorf("%v %d times within %v: not restarting it again", kind, len(recent)+1, restartWindow)
				if err != nil {
					err = fmt.Errorf("%w (the last: %w)", loop, err)
				} else {
					kind, err = vmm.ExitError, loop
				}
			}
			recent = append(recent, now)
		}
		v.last = cur.Stats()
		v.cur = nil
		v.mu.Unlock()
		cur.Close()
		if restart {
			next, nerr := v.newVMM()
			if nerr == nil {
				v.mu.Lock()
				v.cur = next
				v.restarts++
				v.mu.Unlock()
				reason := "the guest rebooted"
				if kind == vmm.ExitCrash {
					reason = "the guest crashed: " + err.Error()
				}
				v.h.publish(Event{Type: EventRestarted, VM: v.name, State: StateRunning, Reason: reason})
				cur = next
				continue
			}
			kind, err = vmm.ExitError, fmt.Errorf("booting again after %v: %w", kind, nerr)
		}
		v.mu.Lock()
		v.exit = &Exit{Kind: kind, Err: err, Forced: v.stopping == stopForced, At: time.Now()}
		state, reason := StateStopped, kind.String()
		if kind.Failed() {
			state, reason = StateFailed, fmt.Sprintf("%v: %v", kind, err)
		}
		v.setStateLocked(state, reason)
		close(v.done)
		v.mu.Unlock()
		if kind.Failed() {
			v.h.log.Error("VM failed", slog.String("vm", v.name), logattr.Err(err))
		}
		return
	}
}

// runOnce runs one incarnation, registering its vCPUs with the scheduler
// (and their threads with the VM's cgroup) while they run.
func (v *VM) runOnce(cur *vmm.VM) (vmm.ExitKind, error) {
	reg := make(chan struct{})
	go func() {
		defer close(reg)
		select {
		case <-cur.Started():
		case <-cur.Done():
			return
		}
		v.register(cur)
		<-cur.Done()
		v.unregister()
	}()
	kind, err := cur.Run(v.h.ctx)
	<-reg
	return kind, err
}

// schedVCPU is a VM's vCPU as the scheduler sees it: vmm.VCPU has the
// mechanisms, the VM's class completes sched.VCPU.
type schedVCPU struct {
	*vmm.VCPU
	class sched.Class
	group string
}

func (s schedVCPU) Class() sched.Class { return s.class }

// Group names the VM, for policies that share cores fairly between VMs.
func (s schedVCPU) Group() string { return s.group }

func (v *VM) register(cur *vmm.VM) {
	h := v.h
	if h.sched == nil {
		return
	}
	v.mu.Lock()
	group := v.group
	v.mu.Unlock()
	if group == nil && h.cgroups != nil {
		g, err := h.cgroups.NewGroup(v.name, cgroup.Limits{CPUs: h.schedCores})
		if err != nil {
			h.log.Error("cgroup", slog.String("vm", v.name), logattr.Err(err))
		} else {
			group = g
		}
	}
	// A VM that ends while its vCPUs register (its threads gone) is no
	// error worth reporting.
	report := func(what string, err error) {
		select {
		case <-cur.Done():
			h.log.Debug(what, slog.String("vm", v.name), logattr.Err(err))
		default:
			h.log.Error(what, slog.String("vm", v.name), logattr.Err(err))
		}
	}
	var regd []*vmm.VCPU
	for _, c := range cur.VCPUs() {
		if group != nil {
			if err := group.AddThread(c.TID()); err != nil {
				report("cgroup: add vCPU thread", err)
			}
		}
		if err := h.sched.Register(schedVCPU{VCPU: c, class: v.class, group: v.name}); err != nil {
			report("sched: register vCPU", err)
			continue
		}
		regd = append(regd, c)
	}
	v.mu.Lock()
	v.group = group
	v.vcpus = regd
	v.mu.Unlock()
}

func (v *VM) unregister() {
	v.mu.Lock()
	regd := v.vcpus
	v.vcpus = nil
	v.mu.Unlock()
	for _, c := range regd {
		// Unregister stops the observer watching the thread: keep its
		// counters first.
		if t, ok := v.h.totals(c.TID()); ok {
			v.mu.Lock()
			if v.past == nil {
				v.past = map[int]pastTotals{}
			}
			p := v.past[c.ID()]
			p.RunTime += t.RunTime
			p.WaitTime += t.WaitTime
			p.Preemptions += t.Preemptions
			v.past[c.ID()] = p
			v.mu.Unlock()
		}
		_ = v.h.sched.Unregister(schedVCPU{VCPU: c, class: v.class, group: v.name})
	}
}

func (v *VM) registeredVCPUs() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.vcpus)
}

// Pause takes the VM's vCPUs out of guest mode and holds them, quiesces
// its devices and cuts its NICs off the datapath (frames to it are
// dropped and counted), until Resume. It returns once no vCPU runs guest
// code; if ctx ends first, the VM is resumed and the error returned.
func (v *VM) Pause(ctx context.Context) error {
	v.op.Lock()
	defer v.op.Unlock()
	v.mu.Lock()
	if err := v.checkLocked(OpPause); err != nil {
		v.mu.Unlock()
		return err
	}
	cur := v.cur
	v.mu.Unlock()
	// Start returns before the vCPU threads exist: let them.
	select {
	case <-cur.Started():
	case <-cur.Done():
	case <-ctx.Done():
		return fmt.Errorf("pause VM %s: %w", v.name, ctx.Err())
	}
	if err := cur.Pause(ctx); err != nil {
		_ = cur.Resume()
		return fmt.Errorf("pause VM %s: %w", v.name, err)
	}
	var errs []error
	for _, p := range v.ports {
		errs = append(errs, p.setPaused(true))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.state == StateRunning {
		v.setStateLocked(StatePaused, "paused")
	}
	return errors.Join(errs...)
}

// Resume lets a paused VM run again: NICs back on the datapath, devices
// and vCPUs released (each vCPU tells the guest's kvmclock it was
// stopped, so the guest sees no soft lockup).
func (v *VM) Resume() error {
	v.op.Lock()
	defer v.op.Unlock()
	v.mu.Lock()
	if err := v.checkLocked(OpResume); err != nil {
		v.mu.Unlock()
		return err
	}
	cur := v.cur
	v.mu.Unlock()
	return v.resume(cur, "resumed")
}

// resume undoes a pause; called with op held.
func (v *VM) resume(cur *vmm.VM, reason string) error {
	var errs []error
	for _, p := range v.ports {
		errs = append(errs, p.setPaused(false))
	}
	errs = append(errs, cur.Resume())
	v.mu.Lock()
	if v.state == StatePaused {
		v.setStateLocked(StateRunning, reason)
	}
	v.mu.Unlock()
	return errors.Join(errs...)
}

// StopOptions say how to stop a VM.
type StopOptions struct {
	// Force ends the VM at once, as pulling the plug would.
	Force bool
	// Timeout is how long a graceful stop waits for the guest to shut
	// down after its power button is pressed before forcing it; 0 means
	// the host's StopTimeout.
	Timeout time.Duration
}

// Stop ends the VM. A graceful stop (the default) resumes a paused VM,
// presses its ACPI power button and waits for the guest to power off;
// after Timeout, or at once if the guest cannot be asked, it is forced.
// Stop returns once the VM has ended (or with ctx's error, the stop then
// going on). Stopping a VM that is stopping escalates to force if asked.
func (v *VM) Stop(ctx context.Context, opts StopOptions) error {
	v.op.Lock()
	v.mu.Lock()
	if err := v.checkLocked(OpStop); err != nil {
		v.mu.Unlock()
		v.op.Unlock()
		return err
	}
	cur, done, wasPaused := v.cur, v.done, v.state == StatePaused
	kind := stopGraceful
	if opts.Force {
		kind = stopForced
	}
	already := v.stopping
	if kind > v.stopping {
		v.stopping = kind
	}
	v.setStateLocked(StateStopping, fmt.Sprintf("stop requested (%s)", map[bool]string{true: "forced", false: "graceful"}[opts.Force]))
	v.mu.Unlock()
	if wasPaused {
		// Also for a forced stop: ports back, the vCPUs then stop.
		_ = v.resume(cur, "resumed to stop")
	}
	v.op.Unlock()

	if kind == stopForced {
		cur.Stop()
	} else if already == stopNone {
		timeout := opts.Timeout
		if timeout <= 0 {
			timeout = v.h.cfg.StopTimeout
		}
		if err := v.pressPowerButton(cur); err != nil {
			v.h.log.Warn("graceful stop impossible: forcing", slog.String("vm", v.name), logattr.Err(err))
			v.force(cur)
		} else {
			go func() {
				t := time.NewTimer(timeout)
				defer t.Stop()
				select {
				case <-done:
				case <-t.C:
					v.h.log.Warn("the guest did not shut down in time: forcing", slog.String("vm", v.name), slog.Duration("timeout", timeout))
					v.force(cur)
				}
			}()
		}
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop VM %s: %w", v.name, ctx.Err())
	}
}

// force stops cur, noting that the stop was forced.
func (v *VM) force(cur *vmm.VM) {
	v.mu.Lock()
	v.stopping = stopForced
	v.mu.Unlock()
	cur.Stop()
}

// pressPowerButton asks the guest to shut down. It holds mu so that the
// run loop cannot close cur meanwhile (it drops v.cur under mu first).
func (v *VM) pressPowerButton(cur *vmm.VM) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cur != cur {
		return nil // it has ended already
	}
	return cur.PowerButton()
}

// Wait returns how the VM's current run ended, once it has (or ctx's
// error). A VM that was never started is an error.
func (v *VM) Wait(ctx context.Context) (*Exit, error) {
	v.mu.Lock()
	done, state := v.done, v.state
	v.mu.Unlock()
	if done == nil {
		return nil, stateError(v.name, "wait for", state)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.exit, nil
}

// Delete removes the VM from the host: its ports, its console file, its
// memory. A running, paused or stopping VM is refused unless force, which
// stops it by force first.
func (h *Host) Delete(name string, force bool) error {
	v, err := h.VM(name)
	if err != nil {
		return err
	}
	return h.delete(v, force)
}

func (h *Host) delete(v *VM, force bool) error {
	v.op.Lock()
	v.mu.Lock()
	if v.deleted {
		v.mu.Unlock()
		v.op.Unlock()
		return fmt.Errorf("VM %q: %w", v.name, ErrNotFound)
	}
	if !v.state.Allows(OpDelete) {
		if !force {
			err := stateError(v.name, OpDelete, v.state)
			v.mu.Unlock()
			v.op.Unlock()
			return err
		}
		v.mu.Unlock()
		v.op.Unlock()
		if err := v.Stop(context.Background(), StopOptions{Force: true}); err != nil && !errors.Is(err, ErrState) {
			return err
		}
		return h.delete(v, false)
	}
	v.deleted = true
	cur := v.cur
	v.cur = nil
	v.mu.Unlock()
	defer v.op.Unlock()
	if cur != nil {
		cur.Close()
	}
	v.release()
	h.mu.Lock()
	delete(h.vms, v.name)
	h.file.Remove(v.name)
	h.mu.Unlock()
	h.publish(Event{Type: EventDeleted, VM: v.name})
	return nil
}

// consoleLinger is how long releasing a VM waits for its console's sink
// to take the rest of the output.
const consoleLinger = 2 * time.Second

// release frees what the VM holds besides its incarnation.
func (v *VM) release() {
	v.mu.Lock()
	ports, group := v.ports, v.group
	v.ports, v.group = nil, nil
	v.mu.Unlock()
	for _, p := range ports {
		if err := p.remove(); err != nil {
			v.h.log.Warn("remove port", slog.String("vm", v.name), logattr.Err(err))
		}
	}
	if group != nil {
		if err := group.Delete(); err != nil {
			v.h.log.Warn("remove cgroup", slog.String("vm", v.name), logattr.Err(err))
		}
	}
	if v.console != nil {
		v.console.close(consoleLinger)
	}
	if v.file != nil {
		v.file.Close()
		v.file = nil
	}
}
