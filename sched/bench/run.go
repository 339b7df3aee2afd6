package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/colibrivm/colibri/sched"
	"github.com/colibrivm/colibri/sched/latency"
	"github.com/colibrivm/colibri/sched/observer"
	"github.com/colibrivm/colibri/sched/threadvcpu"
)

// Run runs the experiment: an isolated run (LC vCPUs only, linux policy),
// then each policy with the batch vCPUs. Progress lines go to progress
// (nil for none).
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
	iters := threadvcpu.Calibrate()
	res := &Result{Config: ConfigJSON{
		LC: cfg.LC, Batch: cfg.Batch, Cores: cfg.Cores, SchedCPU: cfg.SchedCPU,
		DurationS: cfg.Duration.Seconds(), Load: cfg.Load, Service: cfg.Service.String(),
		PeriodUS: float64(cfg.Period) / 1e3, Sleep: cfg.Sleep,
		Observer: obs != nil,
	}}
	pc := sched.PolicyConfig{Central: cfg.Central}
	c := sched.NewCentral(cfg.Central).Config()
	res.Config.ThresholdUS = float64(c.Threshold) / 1e3
	res.Config.QuantumUS = float64(c.Quantum) / 1e3

	iso, err := runOne(ctx, cfg, "linux", 0, obs, iters, pc, progress, "isolated")
	if err != nil {
		return nil, err
	}
	iso.Policy = "isolated"
	res.Isolated = iso
	res.IsolatedP99US = iso.P99US
	for _, p := range cfg.Policies {
		r, err := runOne(ctx, cfg, p, cfg.Batch, obs, iters, pc, progress, p)
		if err != nil {
			return nil, err
		}
		res.Policies = append(res.Policies, *r)
	}
	return res, nil
}

type vcpuSet struct {
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
	for _, v := range s.all() {
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
		Period: cfg.Period, Sleep: cfg.Sleep, Observer: so, Policy: p,
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
		v, err := threadvcpu.Start(vctx, threadvcpu.Config{Class: sched.LatencyCritical, Work: srv, CPUs: cfg.Cores})
		if err != nil {
			return nil, fmt.Errorf("bench: start LC vCPU: %w", err)
		}
		set.lc, set.servers = append(set.lc, v), append(set.servers, srv)
	}
	for i := 0; i < nbatch; i++ {
		sp := &threadvcpu.Spin{ItersPerUS: iters}
		v, err := threadvcpu.Start(vctx, threadvcpu.Config{Class: sched.Batch, Work: sp, CPUs: cfg.Cores})
		if err != nil {
			return nil, fmt.Errorf("bench: start batch vCPU: %w", err)
		}
		set.batch, set.spins = append(set.batch, v), append(set.spins, sp)
	}
	for _, v := range set.all() {
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
	el := time.Since(t0).Seconds()
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
