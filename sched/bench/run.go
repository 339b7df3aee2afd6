package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/sched"
	"github.com/colibrivm/colibri/sched/latency"
	"github.com/colibrivm/colibri/sched/observer"
	"github.com/colibrivm/colibri/sched/threadvcpu"
)

// Run runs the experiment Repeat times: each time an isolated run (LC
// vCPUs only, under IsolatedPolicy), then each policy with the batch
// vCPUs. Progress lines go to progress (nil for none).
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	var obs *observer.Observer
	if !cfg.NoObserver {
		var err error
		if obs, err = observer.New(observer.Options{ManagedCPUs: cfg.Cores}); err != nil {
			return nil, fmt.Errorf("bench: %w (use --no-observer to run without eBPF)", err)
		}
		defer obs.Close()
	}
	res := &Result{Config: ConfigJSON{
		LC: cfg.LC, Batch: cfg.Batch, Cores: cfg.Cores, SchedCPU: cfg.SchedCPU,
		DurationS: cfg.Duration.Seconds(), Repeat: cfg.Repeat, Load: cfg.Load, Service: cfg.Service.String(),
		PeriodUS: float64(cfg.Period) / 1e3, Mode: cfg.Mode.String(), Sleep: cfg.Sleep,
		IsolatedPolicy: cfg.IsolatedPolicy, Observer: obs != nil, Nice: cfg.Nice,
	}}
	// Keep this process's own threads (Go runtime, progress) off the
	// managed cores, as the host does.
	res.Housekeeping = "off (--no-housekeeping)"
	if !cfg.NoHousekeeping {
		online := make([]int, runtime.NumCPU())
		for i := range online {
			online[i] = i
		}
		hk := sched.HousekeepingCPUs(online, cfg.Cores)
		if len(hk) == 0 {
			res.Housekeeping = fmt.Sprintf("none: every CPU is managed (%v), so the process's threads share them", cfg.Cores)
		} else {
			hr, restore, err := sched.Housekeep(hk, nil)
			if err != nil {
				return nil, fmt.Errorf("bench: %w", err)
			}
			defer restore()
			res.Housekeeping = fmt.Sprintf("%d threads of this process moved to CPUs %v (%d kept their own affinity)", len(hr.Moved), hk, hr.Kept)
		}
	}
	// With autogroups (CONFIG_SCHED_AUTOGROUP), a nice value counts only
	// inside the session's group, which competes with every other
	// session's at its own nice: raise that one too.
	if cfg.Nice < 0 {
		if restore, err := autogroupNice(cfg.Nice); err == nil {
			defer restore()
		} else if progress != nil {
			fmt.Fprintf(progress, "bench: %v: other sessions' threads compete at equal weight\n", err)
		}
	}
	iters := threadvcpu.Calibrate()
	pc := sched.PolicyConfig{Central: cfg.Central, Adaptive: cfg.Adaptive}
	c := sched.NewCentral(cfg.Central).Config()
	res.Config.ThresholdUS = float64(c.Threshold) / 1e3
	res.Config.QuantumUS = float64(c.Quantum) / 1e3

	for r := 1; r <= cfg.Repeat; r++ {
		rep := Repetition{Repeat: r}
		label := "isolated"
		if cfg.Repeat > 1 {
			label = fmt.Sprintf("%d/%d isolated", r, cfg.Repeat)
		}
		iso, err := runOne(ctx, cfg, cfg.IsolatedPolicy, 0, obs, iters, pc, progress, label)
		if err != nil {
			return nil, err
		}
		iso.Policy, iso.Repeat = "isolated", r
		rep.Isolated = *iso
		for _, p := range cfg.Policies {
			label := p
			if cfg.Repeat > 1 {
				label = fmt.Sprintf("%d/%d %s", r, cfg.Repeat, p)
			}
			pr, err := runOne(ctx, cfg, p, cfg.Batch, obs, iters, pc, progress, label)
			if err != nil {
				return nil, err
			}
			pr.Repeat = r
			rep.Policies = append(rep.Policies, *pr)
		}
		checkRepetition(&rep)
		if rep.Failed && progress != nil {
			fmt.Fprintf(progress, "repetition %d failed: %s\n", r, rep.Reason)
		}
		res.Repetitions = append(res.Repetitions, rep)
	}
	res.summarize()
	return res, nil
}

type vcpuSet struct {
	ballast []*threadvcpu.VCPU // SCHED_IDLE spinners of an isolated run
	lc      []*threadvcpu.VCPU
	servers []*threadvcpu.Server
	batch   []*threadvcpu.VCPU
	spins   []*threadvcpu.Spin
	lat     latency.Histogram
}

func (s *vcpuSet) all() []*threadvcpu.VCPU {
	return append(append([]*threadvcpu.VCPU{}, s.lc...), s.batch...)
}

func (s *vcpuSet) stop() error {
	var errs []error
	for _, v := range append(s.all(), s.ballast...) {
		errs = append(errs, v.Stop())
	}
	return errors.Join(errs...)
}

func (s *vcpuSet) served() uint64 {
	var n uint64
	for _, sv := range s.servers {
		n += sv.Served()
	}
	return n
}

func (s *vcpuSet) batchWork() uint64 {
	var n uint64
	for _, sp := range s.spins {
		n += sp.Chunks()
	}
	return n
}

// runTime sums the observed run time of the set's vCPU threads, and the
// ballast threads' from /proc (they are not watched).
func (s *vcpuSet) runTime(obs *observer.Observer) time.Duration {
	var d time.Duration
	if obs == nil {
		return 0
	}
	for _, v := range s.all() {
		if slot, ok := obs.Slot(v.TID()); ok {
			d += obs.Totals(slot).RunTime
		}
	}
	for _, v := range s.ballast {
		d += threadRunTime(v.TID())
	}
	return d
}

// threadRunTime reads a thread's time on a CPU from its schedstat.
func threadRunTime(tid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/schedstat", tid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	ns, _ := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(ns)
}

func runOne(ctx context.Context, cfg Config, policy string, nbatch int, obs *observer.Observer, iters int, pc sched.PolicyConfig, progress io.Writer, label string) (_ *PolicyResult, err error) {
	p, err := sched.NewPolicy(policy, pc)
	if err != nil {
		return nil, err
	}
	var so sched.Observer
	if obs != nil {
		so = obs
	}
	s, err := sched.New(sched.Config{
		Cores: cfg.Cores, SchedCPU: cfg.SchedCPU, FIFOPriority: cfg.FIFOPriority,
		Period: cfg.Period, Mode: cfg.Mode, Observer: so, Policy: p,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	vctx, cancelVCPUs := context.WithCancel(ctx)
	defer cancelVCPUs()
	set := &vcpuSet{}
	defer func() {
		if e := set.stop(); e != nil && err == nil {
			err = fmt.Errorf("bench: thread vCPU: %w", e)
		}
	}()
	rate := cfg.Load / cfg.Service.Mean().Seconds()
	for i := 0; i < cfg.LC; i++ {
		srv := &threadvcpu.Server{Rate: rate, Service: cfg.Service, ItersPerUS: iters, Seed: cfg.Seed + uint64(i), Latency: &set.lat}
		v, err := threadvcpu.Start(vctx, threadvcpu.Config{Class: sched.LatencyCritical, Work: srv, CPUs: cfg.Cores, Group: fmt.Sprintf("lc%d", i)})
		if err != nil {
			return nil, fmt.Errorf("bench: start LC vCPU: %w", err)
		}
		set.lc, set.servers = append(set.lc, v), append(set.servers, srv)
	}
	for i := 0; i < nbatch; i++ {
		sp := &threadvcpu.Spin{ItersPerUS: iters}
		v, err := threadvcpu.Start(vctx, threadvcpu.Config{Class: sched.Batch, Work: sp, CPUs: cfg.Cores, Group: fmt.Sprintf("batch%d", i%cfg.BatchVMs)})
		if err != nil {
			return nil, fmt.Errorf("bench: start batch vCPU: %w", err)
		}
		set.batch, set.spins = append(set.batch, v), append(set.spins, sp)
	}
	if nbatch == 0 && !cfg.NoBallast {
		for _, c := range cfg.Cores {
			v, err := threadvcpu.Start(vctx, threadvcpu.Config{Class: sched.Batch, Work: &threadvcpu.Spin{ItersPerUS: iters}, CPUs: []int{c}})
			if err != nil {
				return nil, fmt.Errorf("bench: start ballast thread: %w", err)
			}
			set.ballast = append(set.ballast, v)
			if err := sched.SetThreadPrio(v.TID(), sched.PrioIdle, 0); err != nil {
				return nil, fmt.Errorf("bench: ballast thread: %w", err)
			}
		}
	}
	for _, v := range set.all() {
		if cfg.Nice != 0 {
			if err := unix.Setpriority(unix.PRIO_PROCESS, v.TID(), cfg.Nice); err != nil {
				return nil, fmt.Errorf("bench: nice %d for thread vCPU %d (below 0 needs root): %w", cfg.Nice, v.TID(), err)
			}
		}
		if err := s.Register(v); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	defer func() {
		for _, v := range set.all() {
			_ = s.Unregister(v)
		}
	}()

	sctx, stopSched := context.WithCancel(ctx)
	schedErr := make(chan error, 1)
	go func() { schedErr <- s.Run(sctx) }()

	// Warm up, then measure.
	if !sleepCtx(ctx, cfg.Warmup) {
		stopSched()
		<-schedErr
		return nil, ctx.Err()
	}
	st0 := s.Stats()
	served0, work0 := set.served(), set.batchWork()
	var lcH0, bH0 observer.Hist
	foreign0 := foreignSum(obs, cfg.Cores)
	if obs != nil {
		lcH0, bH0 = sumHists(obs, set.lc), sumHists(obs, set.batch)
	}
	cpu0, cpuErr := readCPUStat()
	run0 := set.runTime(obs)
	for _, sv := range set.servers {
		sv.Record(true)
	}
	t0 := time.Now()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			stopSched()
			<-schedErr
			return nil, ctx.Err()
		case err := <-schedErr:
			stopSched()
			return nil, fmt.Errorf("bench: scheduler: %w", err)
		case <-tick.C:
		}
		el := time.Since(t0)
		if el >= cfg.Duration {
			el, done = cfg.Duration, true
		}
		if progress != nil {
			st := s.Stats()
			fmt.Fprintf(progress, "\r[%-8s] %5.1fs/%.0fs  requests %-8d p99 %7.1fµs  preemptions %-7d migrations %-6d ",
				label, el.Seconds(), cfg.Duration.Seconds(), set.served()-served0, float64(set.lat.Quantile(0.99))/1e3, st.Parks-st0.Parks, st.Migrations-st0.Migrations)
		}
	}
	for _, sv := range set.servers {
		sv.Record(false)
	}
	elapsed := time.Since(t0)
	el := elapsed.Seconds()
	st := s.Stats()
	served, work := set.served()-served0, set.batchWork()-work0
	r := &PolicyResult{
		Policy:          policy,
		P50US:           us(set.lat.Quantile(0.5)),
		P99US:           us(set.lat.Quantile(0.99)),
		P999US:          us(set.lat.Quantile(0.999)),
		MaxUS:           us(set.lat.Max()),
		Requests:        served,
		RPS:             float64(served) / el,
		PreemptionsPerS: float64(st.Parks-st0.Parks) / el,
		MigrationsPerS:  float64(st.Migrations-st0.Migrations) / el,
		BatchWorkPerS:   float64(work) / el,
		ForeignPerS:     float64(foreignSum(obs, cfg.Cores)-foreign0) / el,
		SchedErrors:     st.Errors - st0.Errors,
		CDF:             cdf(&set.lat),
	}
	if cpu1, err := readCPUStat(); err == nil && cpuErr == nil {
		r.ForeignCPU, r.StealCPU = interference(cpu0, cpu1, cfg.Cores, set.runTime(obs)-run0, elapsed, obs != nil)
	}
	if obs != nil {
		lc, b := sumHists(obs, set.lc), sumHists(obs, set.batch)
		subHist(&lc, &lcH0)
		subHist(&b, &bH0)
		r.LCRunqlat, r.BatchRunqlat = &lc, &b
	}
	stopSched()
	if err := <-schedErr; err != nil {
		return nil, fmt.Errorf("bench: scheduler: %w", err)
	}
	r.SchedCPUS = (s.Stats().CPUTime - st0.CPUTime).Seconds()
	if progress != nil {
		fmt.Fprintln(progress)
	}
	if st.LastError != nil && r.SchedErrors > 0 {
		return r, fmt.Errorf("bench: %d scheduler actions failed under %s, last: %w", r.SchedErrors, policy, st.LastError)
	}
	return r, nil
}

// cpuTimes are one CPU's /proc/stat counters, in clock ticks.
type cpuTimes struct{ busy, steal uint64 }

// readCPUStat reads the per-CPU lines of /proc/stat.
func readCPUStat() (map[int]cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return parseCPUStat(string(b))
}

func parseCPUStat(s string) (map[int]cpuTimes, error) {
	out := map[int]cpuTimes{}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		cpu, err := strconv.Atoi(f[0][3:])
		if err != nil {
			continue
		}
		var v [8]uint64
		for i := range v {
			if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
				return nil, fmt.Errorf("bench: /proc/stat: %q: %w", line, err)
			}
		}
		// user nice system idle iowait irq softirq steal
		out[cpu] = cpuTimes{busy: v[0] + v[1] + v[2] + v[5] + v[6], steal: v[7]}
	}
	if len(out) == 0 {
		return nil, errors.New("bench: /proc/stat has no per-CPU lines")
	}
	return out, nil
}

// clockTick is /proc/stat's unit (USER_HZ, 100 on every Linux
// architecture colibri runs on).
const clockTick = 10 * time.Millisecond

// interference returns the share of the managed cores' time used by
// threads other than the vCPUs (busy time less the vCPUs' run time; only
// with the observer), and the share of all CPUs' time stolen by the
// hypervisor, between two /proc/stat readings elapsed apart.
func interference(a, b map[int]cpuTimes, cores []int, vcpuRun, elapsed time.Duration, observed bool) (foreign, steal float64) {
	if elapsed <= 0 {
		return 0, 0
	}
	var busy time.Duration
	for _, c := range cores {
		busy += time.Duration(b[c].busy-a[c].busy) * clockTick
	}
	if observed && len(cores) > 0 {
		foreign = max(0, float64(busy-vcpuRun)/float64(elapsed*time.Duration(len(cores))))
	}
	var st time.Duration
	for c := range b {
		st += time.Duration(b[c].steal-a[c].steal) * clockTick
	}
	steal = float64(st) / float64(elapsed*time.Duration(len(b)))
	return foreign, steal
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// cdfQuantiles are where a latency CDF is sampled: dense in the tail.
var cdfQuantiles = []float64{0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999}

// cdf samples a latency histogram's distribution.
func cdf(h *latency.Histogram) []CDFPoint {
	if h.Count() == 0 {
		return nil
	}
	out := make([]CDFPoint, 0, len(cdfQuantiles)+1)
	for _, q := range cdfQuantiles {
		out = append(out, CDFPoint{Q: q, US: us(h.Quantile(q))})
	}
	return append(out, CDFPoint{Q: 1, US: us(h.Max())})
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func foreignSum(obs *observer.Observer, cpus []int) uint64 {
	if obs == nil {
		return 0
	}
	var n uint64
	for _, c := range cpus {
		f, _ := obs.Foreign(c)
		n += f
	}
	return n
}

// sumHists adds up the runqueue-latency histograms of vs, looked up by
// thread id in the observer.
func sumHists(obs *observer.Observer, vs []*threadvcpu.VCPU) observer.Hist {
	var h observer.Hist
	for _, v := range vs {
		slot, ok := obs.Slot(v.TID())
		if !ok {
			continue
		}
		if sh, err := obs.SlotHist(slot); err == nil {
			h.Add(&sh)
		}
	}
	return h
}

func subHist(h, base *observer.Hist) {
	for i := range h {
		h[i] -= base[i]
	}
}

// autogroupNice sets this process's autogroup nice value (when the
// kernel has autogroups) and returns what puts the old one back.
func autogroupNice(nice int) (restore func(), err error) {
	const path = "/proc/self/autogroup"
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("no autogroup: %w", err)
	}
	// "/autogroup-12 nice 0"
	f := strings.Fields(string(b))
	if len(f) != 3 || f[1] != "nice" {
		return nil, fmt.Errorf("%s: unexpected %q", path, b)
	}
	old, err := strconv.Atoi(f[2])
	if err != nil {
		return nil, fmt.Errorf("%s: %q: %w", path, b, err)
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(nice)), 0); err != nil {
		return nil, fmt.Errorf("set autogroup nice %d: %w", nice, err)
	}
	return func() { _ = os.WriteFile(path, []byte(strconv.Itoa(old)), 0) }, nil
}
