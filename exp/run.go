package exp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/sched/observer"
	"github.com/colibrivm/colibri/vmm"
)

// Options configure a run.
type Options struct {
	// OutDir receives results.json, report.md, the plots and raw/ (the
	// clients' logs). Created if absent.
	OutDir string
	// Kernel and Initrd are booted by VMs that name none (the initrd must
	// hold sockperf and stress-ng: initrd-pkgs.img).
	Kernel, Initrd string
	// Cmdline is the command line of VMs that give none.
	Cmdline string
	// ClientCPUs are the CPUs a client on the host runs on (nil: the
	// pollers' cores, else every CPU the scheduler does not manage).
	ClientCPUs []int
	// Sockperf is the host's sockperf binary (default: sockperf on PATH).
	Sockperf string
	// BootTimeout bounds each guest's boot to its command loop (default
	// 10 minutes: the KVM sandbox is slow).
	BootTimeout time.Duration
	// Progress receives the progress line (nil: none).
	Progress io.Writer
	// Logger receives the host's log (nil: none).
	Logger *slog.Logger
}

// Run runs the experiment f and writes its output to opts.OutDir.
func Run(ctx context.Context, f *File, path string, opts Options) (*Result, error) {
	if opts.OutDir == "" {
		return nil, errors.New("exp: no output directory")
	}
	if err := os.MkdirAll(filepath.Join(opts.OutDir, "raw"), 0o755); err != nil {
		return nil, fmt.Errorf("exp: output directory: %w", err)
	}
	if opts.BootTimeout <= 0 {
		opts.BootTimeout = 10 * time.Minute
	}
	if opts.Sockperf == "" {
		opts.Sockperf = "sockperf"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	needHostClient := slices.ContainsFunc(f.LC, func(l LC) bool { return l.Client == ClientHost })
	if needHostClient {
		if _, err := exec.LookPath(opts.Sockperf); err != nil {
			return nil, fmt.Errorf("exp: a client on the host needs sockperf here (Debian package sockperf): %w", err)
		}
	}
	cores := f.Host.Sched.Cores
	if len(cores) == 0 {
		return nil, &spec.Error{Path: "sched.cores", Msg: "an experiment names its managed cores (the policies are compared on them)"}
	}
	if opts.ClientCPUs == nil {
		opts.ClientCPUs = f.Host.Pollers.Cores
		if len(opts.ClientCPUs) == 0 {
			for c := 0; c < runtime.NumCPU(); c++ {
				if !slices.Contains(cores, c) {
					opts.ClientCPUs = append(opts.ClientCPUs, c)
				}
			}
		}
	}
	// The host's housekeeping keeps this process's own threads (the
	// runner's too) off the managed cores.
	obs, err := observer.New(observer.Options{ManagedCPUs: cores})
	if err != nil {
		return nil, fmt.Errorf("exp: the runner's eBPF observer (per-vCPU wait histograms and the timeline): %w", err)
	}
	defer obs.Close()

	r := &runner{f: f, opts: opts, obs: obs, cores: cores,
		prog: newProgress(opts.Progress, len(f.Phases())*f.Repeats)}
	res := &Result{File: path, Started: time.Now(), Host: hostInfo(), Config: r.config()}
	res.Notes = append(res.Notes,
		fmt.Sprintf("The per-core timeline is sampled: the runner reads each vCPU thread's state from its own eBPF observer %d times a second (as asked; the samples carry their own times) over the first %v of each phase's measured time.", f.TimelineRate, f.TimelineSpan),
		"Latency is the round-trip time sockperf's client measured (under-load: open loop, --reply-every 1), in µs; its first 400 ms are left out by sockperf itself.",
		"CPU ready (wait) and run times, preemptions, switches and the runqueue-latency histograms come from the runner's eBPF observer; migrations from the kernel (/proc/self/task/TID/sched).",
		"Guest steal time is /proc/stat's steal column in the guest (USER_HZ ticks): it counts only if the guest uses KVM's steal-time feature.")
	defer r.prog.done()
	err = r.run(ctx, res)
	res.Ended = time.Now() // before the results are written: they carry it
	summarize(f, res)
	if werr := res.WriteJSON(filepath.Join(opts.OutDir, "results.json")); werr != nil {
		return res, errors.Join(err, werr)
	}
	if werr := WriteReport(res, opts.OutDir); werr != nil {
		return res, errors.Join(err, werr)
	}
	return res, err
}

type runner struct {
	f     *File
	opts  Options
	obs   *observer.Observer
	cores []int
	prog  *progress
}

// phase is one phase to run.
type phase struct {
	label    string
	policy   host.PolicySpec
	isolated bool
}

func (r *runner) phases() []phase {
	var out []phase
	if r.f.Isolated != nil {
		out = append(out, phase{label: IsolatedLabel, policy: *r.f.Isolated, isolated: true})
	}
	for _, p := range r.f.Policies {
		out = append(out, phase{label: p.Label, policy: p.Spec})
	}
	return out
}

func (r *runner) config() Config {
	f := r.f
	c := Config{Boot: f.Boot, Repeats: f.Repeats, WarmupS: f.Warmup.Seconds(), DurationS: f.Duration.Seconds(),
		Phases: f.Phases(), Cores: r.cores, SchedCPU: f.Host.Sched.CPU, Mode: f.Host.Sched.Mode,
		PeriodUS: float64(f.Host.Sched.Period) / 1e3, Pollers: f.Host.Pollers.Cores, Client: r.opts.ClientCPUs}
	for _, l := range f.LC {
		c.LC = append(c.LC, l.Name())
	}
	for _, b := range f.Batch {
		c.Batch = append(c.Batch, "stress-ng "+b.Args+" in "+b.VM)
	}
	return c
}

func hostInfo() HostInfo {
	hi := HostInfo{CPUs: runtime.NumCPU(), Sandbox: os.Getenv("COLIBRI_IN_SANDBOX") == "1"}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		hi.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		hi.Timers = timerArgs(string(b))
	}
	return hi
}

// timerArgs picks the timer arguments out of a kernel command line.
func timerArgs(cmdline string) string {
	var out []string
	for _, a := range strings.Fields(cmdline) {
		name, _, _ := strings.Cut(a, "=")
		switch name {
		case "nohz", "nohz_full", "highres", "lapic", "clocksource", "tsc", "hpet":
			out = append(out, a)
		}
	}
	return strings.Join(out, " ")
}

func (r *runner) run(ctx context.Context, res *Result) error {
	phases := r.phases()
	if r.f.Boot == BootOnce {
		s, err := r.boot(ctx, phases[0].policy, true)
		if err != nil {
			return err
		}
		defer s.close()
		for rep := 1; rep <= r.f.Repeats; rep++ {
			for _, p := range phases {
				pr := s.runPhase(ctx, p, rep)
				res.Runs = append(res.Runs, pr)
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := s.alive(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for rep := 1; rep <= r.f.Repeats; rep++ {
		for _, p := range phases {
			s, err := r.boot(ctx, p.policy, !p.isolated)
			if err != nil {
				return fmt.Errorf("repeat %d, %s: %w", rep, p.label, err)
			}
			pr := s.runPhase(ctx, p, rep)
			s.close()
			res.Runs = append(res.Runs, pr)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// session is one host with the experiment's VMs booted.
type session struct {
	r      *runner
	h      *host.Host
	cancel context.CancelFunc
	guests map[string]*guest
	order  []string // VM names in file order
	refs   []vcpuRef
}

// boot builds the host and boots the VMs (the batch ones only if
// withBatch), one after the other, each to its command loop, then starts
// the LC servers.
func (r *runner) boot(ctx context.Context, p host.PolicySpec, withBatch bool) (_ *session, err error) {
	f := r.f
	hs := f.Host
	hs.VMs = nil
	hs.Sched.Policy, hs.Sched.Threshold, hs.Sched.Quantum, hs.Sched.Grace = p.Name, p.Threshold, p.Quantum, p.Grace
	sctx, cancel := context.WithCancel(ctx)
	s := &session{r: r, cancel: cancel, guests: map[string]*guest{}}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	r.prog.step("booting the host")
	s.h, err = host.New(sctx, host.Config{
		Spec: hs, Scheduler: true,
		DefaultKernel: func() (string, string, error) {
			if r.opts.Kernel == "" {
				return "", "", errors.New("no default kernel")
			}
			return r.opts.Kernel, r.opts.Initrd, nil
		},
		DefaultCmdline: r.opts.Cmdline,
		StopTimeout:    20 * time.Second,
		Logger:         r.opts.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("exp: host: %w", err)
	}
	if err := s.addressTAPs(); err != nil {
		return nil, err
	}
	batch := map[string]bool{}
	for _, b := range f.Batch {
		batch[b.VM] = true
	}
	// LC servers first, then the clients, then the batch VMs.
	rank := func(v spec.VM) int {
		switch {
		case slices.ContainsFunc(f.LC, func(l LC) bool { return l.Server == v.Name }):
			return 0
		case batch[v.Name]:
			return 2
		}
		return 1
	}
	vms := slices.Clone(f.Host.VMs)
	slices.SortStableFunc(vms, func(a, b spec.VM) int { return rank(a) - rank(b) })
	for _, v := range vms {
		if batch[v.Name] && !withBatch {
			continue
		}
		var addrs []string
		for _, n := range v.NICs {
			addrs = append(addrs, f.Addr(v.Name, n.Switch))
		}
		v.Append = strings.TrimSpace(v.Append + ` colibri.run="` + agentScript(addrs) + `"`)
		pr, pw := io.Pipe()
		vm, err := s.h.CreateVM(v, host.WithVMMConfig(func(c *vmm.Config) { c.ConsoleIn = pr }))
		if err != nil {
			return nil, fmt.Errorf("exp: VM %s: %w", v.Name, err)
		}
		g := newGuest(v.Name, vm, pw)
		s.guests[v.Name] = g
		go g.follow(sctx)
		r.prog.step("booting " + v.Name)
		if err := vm.Start(); err != nil {
			return nil, fmt.Errorf("exp: VM %s: %w", v.Name, err)
		}
		if err := g.waitReady(sctx, r.opts.BootTimeout); err != nil {
			return nil, fmt.Errorf("exp: %w", err)
		}
		if err := s.watch(vm, v); err != nil {
			return nil, err
		}
	}
	for _, v := range f.Host.VMs {
		if _, ok := s.guests[v.Name]; ok {
			s.order = append(s.order, v.Name)
		}
	}
	for _, l := range f.LC {
		r.prog.step("starting sockperf server in " + l.Server)
		g := s.guests[l.Server]
		ip := f.Addr(l.Server, f.Host.VMs[f.vmIndex(l.Server)].NICs[0].Switch)
		_, st, err := g.run(sctx, serverCmd(l, ip), 2*time.Minute)
		if err != nil {
			return nil, fmt.Errorf("exp: sockperf server: %w", err)
		}
		if st != 0 {
			return nil, fmt.Errorf("exp: sockperf server in %s did not bind %s:%d (status %d; console:\n%s)", l.Server, ip, l.Port, st, g.console())
		}
	}
	return s, nil
}

// addressTAPs gives each switch's first TAP uplink its host address.
func (s *session) addressTAPs() error {
	for _, sw := range s.r.f.Host.Switches {
		tap, ok := s.r.f.hostTAP(sw.Name)
		if !ok {
			continue
		}
		addr := s.r.f.Addr(ClientHost, sw.Name) + "/24"
		if out, err := exec.Command("ip", "addr", "replace", addr, "dev", tap).CombinedOutput(); err != nil {
			return fmt.Errorf("exp: address %s on TAP %s: %v: %s", addr, tap, err, bytes.TrimSpace(out))
		}
		if out, err := exec.Command("ip", "link", "set", tap, "up").CombinedOutput(); err != nil {
			return fmt.Errorf("exp: TAP %s up: %v: %s", tap, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// watch has the runner's observer watch the VM's vCPU threads.
func (s *session) watch(vm *host.VM, v spec.VM) error {
	info := vm.Info()
	for _, c := range info.VCPUs {
		slot, err := s.r.obs.Watch(c.TID)
		if err != nil {
			return fmt.Errorf("exp: watch vCPU %d of %s: %w", c.ID, v.Name, err)
		}
		s.refs = append(s.refs, vcpuRef{VM: v.Name, ID: c.ID, TID: c.TID, Class: v.Class, slot: slot})
	}
	if len(info.VCPUs) == 0 {
		return fmt.Errorf("exp: VM %s shows no vCPU threads", v.Name)
	}
	return nil
}

// alive returns an error if a VM of the session has ended.
func (s *session) alive() error {
	for _, name := range s.order {
		g := s.guests[name]
		switch st := g.vm.State(); st {
		case host.StateRunning, host.StatePaused:
		default:
			return fmt.Errorf("exp: VM %s is %s (console:\n%s)", name, st, g.console())
		}
	}
	return nil
}

func (s *session) close() {
	for _, ref := range s.refs {
		_ = s.r.obs.Unwatch(ref.slot)
	}
	s.refs = nil
	if s.h != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_ = s.h.Close(ctx)
		cancel()
	}
	for _, g := range s.guests {
		g.in.Close()
	}
	s.cancel()
}

// runPhase runs one phase and returns its figures; a failure is in its
// Error.
func (s *session) runPhase(ctx context.Context, p phase, rep int) *PhaseResult {
	f, r := s.r.f, s.r
	pr := &PhaseResult{Phase: p.label, Repeat: rep, Isolated: p.isolated, Started: time.Now().UTC().Format(time.RFC3339),
		Policy: PolicyInfo{Name: p.policy.Name, ThresholdUS: us(p.policy.Threshold), QuantumUS: us(p.policy.Quantum), GraceUS: us(p.policy.Grace)}}
	r.prog.phase(rep, p.label)
	fail := func(err error) *PhaseResult {
		pr.Error = err.Error()
		return pr
	}
	// Batch VMs: paused for the isolated run, running otherwise.
	for _, b := range f.Batch {
		g, ok := s.guests[b.VM]
		if !ok {
			continue
		}
		st := g.vm.State()
		if p.isolated && st == host.StateRunning {
			if err := g.vm.Pause(ctx); err != nil {
				return fail(err)
			}
		} else if !p.isolated && st == host.StatePaused {
			if err := g.vm.Resume(); err != nil {
				return fail(err)
			}
		}
	}
	if err := s.h.SetPolicy(p.policy); err != nil {
		return fail(fmt.Errorf("set policy %s: %w", p.label, err))
	}
	secs := int(math.Ceil(f.Duration.Seconds()))
	// Batch work covers the warm-up, the measured time and a margin.
	type batchRun struct {
		b  Batch
		g  *guest
		id string
		p  *pending
	}
	var batches []batchRun
	if !p.isolated {
		bsecs := int(math.Ceil((f.Warmup + f.Duration).Seconds())) + 2
		for _, b := range f.Batch {
			g := s.guests[b.VM]
			id, pd, err := g.start(batchCmd(b, bsecs), true)
			if err != nil {
				return fail(err)
			}
			batches = append(batches, batchRun{b, g, id, pd})
		}
	}
	r.prog.step(fmt.Sprintf("warm-up %v", f.Warmup))
	if !sleepCtx(ctx, f.Warmup) {
		return fail(ctx.Err())
	}
	r.prog.step(fmt.Sprintf("measuring %ds", secs))
	before := s.snapGuests(ctx)
	hb := s.snapHost()
	smp := startSampler(ctx, r.obs, s.refs, r.cores, f.TimelineRate, f.TimelineSpan)
	pr.LC = s.runClients(ctx, p, rep, secs)
	ha := s.snapHost()
	pr.Timeline = smp.finish()
	after := s.snapGuests(ctx)
	// A server's count may trail its client's by what was in flight.
	for i, l := range f.LC {
		for try := 0; try < 10 && after[l.Server].udpIn+after[l.Server].udpInErr-before[l.Server].udpIn-before[l.Server].udpInErr < pr.LC[i].Sent; try++ {
			if !sleepCtx(ctx, 200*time.Millisecond) {
				break
			}
			if sn, err := s.snapGuest(ctx, l.Server); err == nil {
				after[l.Server] = sn
			}
		}
	}
	pr.MeasureS = ha.at.Sub(hb.at).Seconds()
	for i, l := range f.LC {
		lr := pr.LC[i]
		a, b := before[l.Server], after[l.Server]
		lr.ServerReceived, lr.ServerDropped = -1, -1
		if !l.TCP && a.ok && b.ok {
			lr.ServerReceived = int64(b.udpIn+b.udpInErr) - int64(a.udpIn+a.udpInErr)
			lr.ServerDropped = int64(b.udpInErr+b.rcvEr) - int64(a.udpInErr+a.rcvEr)
		}
	}
	if len(batches) > 0 {
		r.prog.step("collecting batch results")
	}
	for _, br := range batches {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute+f.Duration+f.Warmup)
		lines, _, err := br.g.wait(wctx, br.id, br.p)
		cancel()
		res := parseBatch(br.b.VM, lines)
		if err != nil {
			res.Error = err.Error()
		}
		pr.Batch = append(pr.Batch, res)
	}
	s.fillHost(pr, hb, ha)
	for _, name := range s.order {
		g := s.guests[name]
		vr := VMResult{Name: name, Paused: g.vm.State() == host.StatePaused}
		a, b := before[name], after[name]
		if v := steal(a, b); !math.IsNaN(v) {
			vr.StealS = &v
		} else if !vr.Paused {
			vr.GuestErr = "no counters from the guest"
		}
		sa, sb := hb.vms[name], ha.vms[name]
		vr.Exits = sb.KVMExits["exits"] - sa.KVMExits["exits"]
		vr.Kicks, vr.Parks = sb.Kicks-sa.Kicks, sb.Parks-sa.Parks
		pr.VMs = append(pr.VMs, vr)
	}
	return pr
}

// runClients runs every LC workload's client at once for secs seconds.
func (s *session) runClients(ctx context.Context, p phase, rep, secs int) []*LCResult {
	f := s.r.f
	out := make([]*LCResult, len(f.LC))
	var wg sync.WaitGroup
	for i, l := range f.LC {
		lr := &LCResult{Workload: l.Name(), Server: l.Server, Client: l.Client}
		out[i] = lr
		ip := f.Addr(l.Server, f.Host.VMs[f.vmIndex(l.Server)].NICs[0].Switch)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sum ClientSummary
			var rtts []float64
			var err error
			if l.Client == ClientHost {
				log := filepath.Join(s.r.opts.OutDir, "raw", fmt.Sprintf("%s-r%d-lc%d.csv", fileSafe(p.label), rep, i))
				sum, rtts, err = s.hostClient(ctx, l, ip, secs, log)
			} else {
				g := s.guests[l.Client]
				var lines []string
				var st int
				lines, st, err = g.run(ctx, clientCmd(l, ip, secs), time.Duration(secs)*time.Second+2*time.Minute)
				if err == nil && st != 0 {
					err = fmt.Errorf("sockperf client in %s: status %d", l.Client, st)
				}
				var clean []string
				for _, ln := range lines {
					if rest, ok := strings.CutPrefix(ln, "sp "); ok {
						clean = append(clean, rest)
					}
				}
				sum = parseClient(clean)
			}
			fillLC(lr, sum, rtts)
			if err != nil {
				lr.Error = err.Error()
			} else if !sum.ok {
				lr.Error = "sockperf printed no summary"
			}
		}()
	}
	wg.Wait()
	return out
}

// hostClient runs sockperf on this host, pinned to the client CPUs.
func (s *session) hostClient(ctx context.Context, l LC, ip string, secs int, fullLog string) (ClientSummary, []float64, error) {
	args := clientArgs(l, ip, secs, fullLog)
	name := s.r.opts.Sockperf
	if cpus := s.r.opts.ClientCPUs; len(cpus) > 0 {
		if tp, err := exec.LookPath("taskset"); err == nil {
			var cs []string
			for _, c := range cpus {
				cs = append(cs, strconv.Itoa(c))
			}
			args = append([]string{"-c", strings.Join(cs, ","), name}, args...)
			name = tp
		}
	}
	cctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	sum := parseClient(strings.Split(out.String(), "\n"))
	if err != nil {
		return sum, nil, fmt.Errorf("sockperf client: %w: %s", err, lastLines(out.String(), 5))
	}
	fl, ferr := os.Open(fullLog)
	if ferr != nil {
		return sum, nil, fmt.Errorf("sockperf full log: %w", ferr)
	}
	defer fl.Close()
	rtts, ferr := readFullLog(fl)
	return sum, rtts, ferr
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

// fillLC fills lr from the client's summary and, if there is one, its
// full log (whose percentiles then replace the summary's).
func fillLC(lr *LCResult, s ClientSummary, rtts []float64) {
	lr.Sent, lr.Received, lr.ValidS, lr.Observations = s.Sent, s.Received, s.ValidS, s.Observations
	lr.MeanUS, lr.MaxUS = s.MeanUS, s.MaxUS
	lr.P50US, lr.P99US, lr.P999US = s.Percentiles[50], s.Percentiles[99], s.Percentiles[99.9]
	if len(rtts) > 0 {
		lr.P50US, lr.P99US, lr.P999US = quantile(rtts, 0.5), quantile(rtts, 0.99), quantile(rtts, 0.999)
		lr.MaxUS = rtts[len(rtts)-1]
		lr.CDF = cdfOf(rtts)
		lr.rtts = rtts
		return
	}
	lr.CDF = cdfFromSummary(s)
}

func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

// snapGuests asks every running guest for its counters.
func (s *session) snapGuests(ctx context.Context) map[string]guestSnap {
	out := map[string]guestSnap{}
	for _, name := range s.order {
		if s.guests[name].vm.State() != host.StateRunning {
			continue
		}
		if sn, err := s.snapGuest(ctx, name); err == nil {
			out[name] = sn
		}
	}
	return out
}

func (s *session) snapGuest(ctx context.Context, name string) (guestSnap, error) {
	lines, _, err := s.guests[name].run(ctx, snapCmd, time.Minute)
	if err != nil {
		return guestSnap{}, err
	}
	return parseSnap(lines), nil
}

func (s *session) snapHost() hostSnap {
	hs := hostSnap{at: time.Now(), vcpus: snapVCPUs(s.r.obs, s.refs), sched: s.h.SchedInfo().Stats, vms: map[string]vmm.Stats{}}
	for _, name := range s.order {
		hs.vms[name] = s.guests[name].vm.Stats()
	}
	return hs
}

// fillHost fills the vCPU and scheduler figures between two snapshots.
func (s *session) fillHost(pr *PhaseResult, a, b hostSnap) {
	el := b.at.Sub(a.at).Seconds()
	for i, ref := range s.refs {
		x, y := a.vcpus[i], b.vcpus[i]
		vr := VCPUResult{VCPU: ref.Name(), Class: ref.Class,
			RunS: (y.tot.RunTime - x.tot.RunTime).Seconds(), WaitS: (y.tot.WaitTime - x.tot.WaitTime).Seconds(),
			Preemptions: y.tot.Preemptions - x.tot.Preemptions, Switches: y.tot.Switches - x.tot.Switches,
			Wakeups: y.tot.Wakeups - x.tot.Wakeups, Migrations: -1}
		if x.migrations >= 0 && y.migrations >= 0 {
			vr.Migrations = y.migrations - x.migrations
		}
		h := y.hist
		for k := range h {
			h[k] -= x.hist[k]
		}
		vr.WaitHist = h[:]
		vr.WaitP50US, vr.WaitP99US = histQuantile(&h, 0.5), histQuantile(&h, 0.99)
		pr.VCPUs = append(pr.VCPUs, vr)
	}
	sa, sb := a.sched, b.sched
	pr.Sched = SchedResult{Passes: sb.Passes - sa.Passes, Parks: sb.Parks - sa.Parks, Unparks: sb.Unparks - sa.Unparks,
		Migrations: sb.Migrations - sa.Migrations, Errors: sb.Errors - sa.Errors,
		CPUS: (sb.CPUTime - sa.CPUTime).Seconds(), PassS: (sb.PassTime - sa.PassTime).Seconds()}
	if el > 0 {
		pr.Sched.CPUPct = 100 * pr.Sched.CPUS / el
	}
}

// histQuantile returns the upper bound (µs) of the bucket holding the
// q-quantile; 0 for an empty histogram.
func histQuantile(h *observer.Hist, q float64) float64 {
	n := h.Count()
	if n == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(n)))
	var acc uint64
	for b, c := range h {
		acc += uint64(c)
		if acc >= want {
			_, hi := observer.Range(b)
			return float64(hi)
		}
	}
	_, hi := observer.Range(len(h) - 1)
	return float64(hi)
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
