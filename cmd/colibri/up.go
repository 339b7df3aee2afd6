package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/kvm"
	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/sched"
	"github.com/colibrivm/colibri/sched/cgroup"
	"github.com/colibrivm/colibri/sched/observer"
	"github.com/colibrivm/colibri/vmm"
)

type upFlags struct {
	stats     bool
	statsJSON string
	verbose   bool
}

func newUpCmd() *cobra.Command {
	var f upFlags
	cmd := &cobra.Command{
		Use:   "up FILE",
		Short: "Run the VMs, switches and scheduler a YAML or JSON file declares",
		Long: `up starts everything FILE declares: the netstack pollers on their cores,
the switches with their uplinks (TAP devices, AF_XDP sockets), the VMs with
their NICs on those switches, and the central scheduler with its policy over
its managed cores (every vCPU registered under its VM's class; without a sched
section the policy is linux: no intervention).

Each guest's console goes to stdout, every line prefixed with "NAME| ", or to
the file its console field names. up runs until every VM has powered off, or
until Ctrl-C, and exits non-zero if any VM failed. SIGUSR1 prints the datapath
and scheduler counters while it runs.

FILE (YAML; JSON with the same names works too):

  pollers: {cores: [1]}                 # host cores for the datapath
  sched: {policy: central, cores: [0]}  # linux | pinned | central
                                        # also: period (5us); central: threshold, quantum, grace
  switches:
    - name: sw0
      uplinks: [{tap: tap0}, {xdp: veth0}]   # both optional
  vms:
    - name: a
      kernel: path/bzImage              # default: the image from 'make images'
      initrd: path/initrd
      cmdline: "console=ttyS0 ..."
      cpus: 1
      mem: 256M
      class: lc                         # lc | batch
      disks: [{path: a.img, readonly: false}]
      nics: [{switch: sw0, mac: "52:54:00:00:00:0a"}]  # also: offloads (true: checksum/TSO)`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runUp(cmd, args[0], f) },
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.stats, "stats", false, "print each VM's exits and the datapath and scheduler counters at exit (stderr)")
	fl.StringVar(&f.statsJSON, "stats-json", "", "write the counters as JSON to `FILE` at exit")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log what the VMM does (to stderr)")
	return cmd
}

// upVM is one VM of an up file while it runs.
type upVM struct {
	name  string
	class sched.Class
	vm    *vmm.VM
	out   *prefixWriter
	file  *os.File
	kind  vmm.ExitKind
	err   error
}

// upStats is what --stats-json writes.
type upStats struct {
	VMs      []upVMStats    `json:"vms"`
	Netstack netstack.Stats `json:"netstack"`
	Sched    *upSchedStats  `json:"sched,omitempty"`
	Uplinks  map[string]any `json:"uplinks,omitempty"`
}

type upVMStats struct {
	Name  string    `json:"name"`
	Exit  string    `json:"exit"`
	Error string    `json:"error,omitempty"`
	Stats vmm.Stats `json:"stats"`
}

type upSchedStats struct {
	Policy     string  `json:"policy"`
	Passes     uint64  `json:"passes"`
	Parks      uint64  `json:"parks"`
	Unparks    uint64  `json:"unparks"`
	Migrations uint64  `json:"migrations"`
	Errors     uint64  `json:"errors"`
	CPUTimeS   float64 `json:"cpu_time_s"`
}

// upRun holds everything an up run owns, so that one deferred close
// releases it in order whatever failed.
type upRun struct {
	log     *zap.Logger
	net     *datapath
	vms     []*upVM
	sched   *sched.Scheduler
	obs     *observer.Observer
	cgroups *cgroup.Manager
	// schedCores are the cores the scheduler manages.
	schedCores []int
	closers    []func() error
}

func (r *upRun) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		if err := r.closers[i](); err != nil {
			r.log.Warn("cleanup", zap.Error(err))
		}
	}
}

func runUp(cmd *cobra.Command, path string, f upFlags) error {
	file, err := spec.Load(path)
	if err != nil {
		return err
	}
	r := &upRun{log: newLogger(f.verbose)}
	defer r.close()

	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	var interrupted sync.Once
	wasInterrupted := false
	go func() {
		for s := range sigs {
			if s == syscall.SIGUSR1 {
				r.printStats(os.Stderr)
				continue
			}
			interrupted.Do(func() { wasInterrupted = true })
			cancel()
		}
	}()

	if err := checkCoresAvailable(file); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := r.setupNet(file); err != nil {
		return err
	}
	consoles := &lockedWriter{w: cmd.OutOrStdout()}
	for _, v := range file.VMs {
		if err := r.addVM(v, consoles); err != nil {
			return fmt.Errorf("vm %s: %w", v.Name, err)
		}
	}
	if err := r.setupSched(file); err != nil {
		return err
	}
	if err := r.net.stack.Start(ctx); err != nil {
		return fmt.Errorf("netstack: %w", err)
	}

	schedErr := make(chan error, 1)
	if r.sched != nil {
		go func() { schedErr <- r.sched.Run(ctx) }()
	}
	var wg sync.WaitGroup
	for _, v := range r.vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.runVM(ctx, v)
		}()
	}
	wg.Wait()
	cancel()
	if r.sched != nil {
		if err := <-schedErr; err != nil && !errors.Is(err, context.Canceled) {
			r.log.Warn("scheduler", zap.Error(err))
		}
	}

	if f.stats {
		r.printStats(os.Stderr)
	}
	if f.statsJSON != "" {
		if err := r.writeStatsJSON(f.statsJSON); err != nil {
			return err
		}
	}
	var failed []string
	for _, v := range r.vms {
		switch v.kind {
		case vmm.ExitPowerOff, vmm.ExitReset:
		case vmm.ExitStopped:
			if !wasInterrupted {
				failed = append(failed, v.name+": stopped")
			}
		default:
			failed = append(failed, fmt.Sprintf("%s: %v", v.name, v.err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d VMs failed: %s", len(failed), len(r.vms), strings.Join(failed, "; "))
	}
	if wasInterrupted {
		return exitError{130}
	}
	return nil
}

// setupNet creates the netstack, its switches and their uplinks.
func (r *upRun) setupNet(file *spec.File) error {
	d, err := newDatapath(file.Pollers.Cores, r.log)
	if err != nil {
		return err
	}
	r.net = d
	r.closers = append(r.closers, d.close)
	for _, s := range file.Switches {
		if err := d.addSwitch(s.Name, s.Uplinks); err != nil {
			return err
		}
	}
	return nil
}

// addVM creates one VM (not yet running).
func (r *upRun) addVM(v spec.VM, consoles io.Writer) error {
	cfg := vmm.Config{
		Kernel: v.Kernel, Initrd: v.Initrd, Cmdline: v.Cmdline,
		CPUs: v.CPUs, MemSize: v.Mem, RNG: true, Logger: r.log.With(zap.String("vm", v.Name)),
	}
	if cfg.Cmdline == "" {
		cfg.Cmdline = defaultCmdline
	}
	if v.Append != "" {
		cfg.Cmdline += " " + v.Append
	}
	if err := resolveKernel(&cfg); err != nil {
		return err
	}
	for _, d := range v.Disks {
		cfg.Disks = append(cfg.Disks, vmm.Disk{Path: d.Path, ReadOnly: d.ReadOnly})
	}
	for i, n := range v.NICs {
		nic, err := r.net.guestNIC(n.Switch, v.Name, i, n.MAC)
		if err != nil {
			return fmt.Errorf("nics[%d]: %w", i, err)
		}
		nic.NoOffloads = n.NoOffloads
		cfg.NICs = append(cfg.NICs, nic)
	}
	u := &upVM{name: v.Name, class: sched.Batch}
	if v.Class == "lc" {
		u.class = sched.LatencyCritical
	}
	if v.Console != "" {
		f, err := os.Create(v.Console)
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		u.file = f
		r.closers = append(r.closers, f.Close)
		cfg.Console = f
	} else {
		u.out = newPrefixWriter(consoles, v.Name+"| ")
		cfg.Console = u.out
	}
	vm, err := vmm.New(cfg)
	if err != nil {
		if errors.Is(err, kvm.ErrNoKVM) {
			return fmt.Errorf("%w\n  run it inside the KVM sandbox: scripts/kvm-sandbox ./bin/colibri up FILE", err)
		}
		return err
	}
	u.vm = vm
	r.closers = append(r.closers, vm.Close)
	r.vms = append(r.vms, u)
	return nil
}

// setupSched creates the scheduler (and the VMs' cgroups) unless the
// policy is linux on unspecified cores, which is no scheduler at all.
func (r *upRun) setupSched(file *spec.File) error {
	sc := file.Sched
	if sc.Policy == spec.PolicyLinux && len(sc.Cores) == 0 {
		return nil
	}
	cores := sc.Cores
	if len(cores) == 0 {
		var err error
		if cores, err = onlineCoresExcept(file.Pollers.Cores); err != nil {
			return fmt.Errorf("sched: %w", err)
		}
	}
	r.schedCores = cores
	pc := sched.DefaultPolicyConfig()
	if sc.Threshold > 0 {
		pc.Central.Threshold = sc.Threshold
	}
	if sc.Quantum > 0 {
		pc.Central.Quantum = sc.Quantum
	}
	if sc.Grace > 0 {
		pc.Central.Grace = sc.Grace
	}
	policy, err := sched.NewPolicy(sc.Policy, pc)
	if err != nil {
		return fmt.Errorf("sched: %w", err)
	}
	cfg := sched.Config{Cores: cores, SchedCPU: -1, Policy: policy, Sleep: true, Period: sc.Period}
	if sc.Policy == spec.PolicyCentral {
		obs, err := observer.New(observer.Options{ManagedCPUs: cores})
		if err != nil {
			return fmt.Errorf("sched: the central policy needs the eBPF observer: %w", err)
		}
		r.obs = obs
		r.closers = append(r.closers, obs.Close)
		cfg.Observer = obs
	}
	s, err := sched.New(cfg)
	if err != nil {
		return fmt.Errorf("sched: %w", err)
	}
	r.sched = s
	cg, err := cgroup.Open("colibri")
	if err != nil {
		return fmt.Errorf("sched: %w", err)
	}
	r.cgroups = cg
	r.closers = append(r.closers, cg.Close)
	return nil
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

// checkCoresAvailable refuses pollers.cores or sched.cores that name a CPU
// this process cannot run on (offline, or outside its affinity).
func checkCoresAvailable(file *spec.File) error {
	avail, err := availableCores()
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name  string
		cores []int
	}{{"pollers.cores", file.Pollers.Cores}, {"sched.cores", file.Sched.Cores}} {
		for _, c := range f.cores {
			if !slices.Contains(avail, c) {
				return fmt.Errorf("%s: CPU %d is not available to this process (available: %v)", f.name, c, avail)
			}
		}
	}
	return nil
}

// onlineCoresExcept lists the CPUs this process may run on minus skip.
func onlineCoresExcept(skip []int) ([]int, error) {
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

// schedVCPU is a VM's vCPU as the scheduler sees it: vmm.VCPU has the
// mechanisms, the VM's class completes sched.VCPU.
type schedVCPU struct {
	*vmm.VCPU
	class sched.Class
}

func (s schedVCPU) Class() sched.Class { return s.class }

// runVM runs one VM to its end, registering its vCPUs with the scheduler
// (and their threads with the VM's cgroup) once they have started.
func (r *upRun) runVM(ctx context.Context, v *upVM) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-v.vm.Started():
		case <-v.vm.Done():
			return
		}
		if r.sched == nil {
			return
		}
		var group *cgroup.Group
		if r.cgroups != nil {
			g, err := r.cgroups.NewGroup(v.name, cgroup.Limits{CPUs: r.schedCores})
			if err != nil {
				r.log.Error("cgroup", zap.String("vm", v.name), zap.Error(err))
			} else {
				group = g
			}
		}
		for _, c := range v.vm.VCPUs() {
			if group != nil {
				if err := group.AddThread(c.TID()); err != nil {
					r.log.Error("cgroup: add vCPU thread", zap.String("vm", v.name), zap.Error(err))
				}
			}
			if err := r.sched.Register(schedVCPU{VCPU: c, class: v.class}); err != nil {
				r.log.Error("sched: register vCPU", zap.String("vm", v.name), zap.Error(err))
			}
		}
		<-v.vm.Done()
		for _, c := range v.vm.VCPUs() {
			_ = r.sched.Unregister(schedVCPU{VCPU: c, class: v.class})
		}
	}()
	v.kind, v.err = v.vm.Run(ctx)
	<-done
	if v.out != nil {
		v.out.Flush()
	}
}

func (r *upRun) snapshot() upStats {
	st := upStats{Netstack: r.net.stack.Stats()}
	for _, v := range r.vms {
		vs := upVMStats{Name: v.name, Exit: v.kind.String(), Stats: v.vm.Stats()}
		if v.err != nil {
			vs.Error = v.err.Error()
		}
		st.VMs = append(st.VMs, vs)
	}
	if r.sched != nil {
		s := r.sched.Stats()
		st.Sched = &upSchedStats{Policy: r.sched.Policy().Name(), Passes: s.Passes, Parks: s.Parks, Unparks: s.Unparks,
			Migrations: s.Migrations, Errors: s.Errors, CPUTimeS: s.CPUTime.Seconds()}
	}
	if len(r.net.xdps) > 0 {
		st.Uplinks = map[string]any{}
		for name, x := range r.net.xdps {
			st.Uplinks["xdp:"+name] = x.Stats()
		}
	}
	return st
}

func (r *upRun) printStats(w io.Writer) {
	st := r.snapshot()
	for _, v := range st.VMs {
		fmt.Fprintf(w, "== VM %s: %s\n%s", v.Name, v.Exit, v.Stats.Format())
	}
	fmt.Fprintln(w, "== netstack")
	st.Netstack.WriteText(w)
	if st.Sched != nil {
		fmt.Fprintf(w, "== sched: policy %s, %d passes, %d parks, %d unparks, %d migrations, %d errors, %.3f s CPU\n",
			st.Sched.Policy, st.Sched.Passes, st.Sched.Parks, st.Sched.Unparks, st.Sched.Migrations, st.Sched.Errors, st.Sched.CPUTimeS)
	}
}

func (r *upRun) writeStatsJSON(path string) error {
	b, err := json.MarshalIndent(r.snapshot(), "", "  ")
	if err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	return nil
}
