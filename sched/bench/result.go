package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"text/tabwriter"

	"github.com/colibrivm/colibri/sched/observer"
)

// PolicyResult is one run's measurements (one policy, one repetition).
type PolicyResult struct {
	Policy string `json:"policy"`
	// Repeat is the repetition, from 1.
	Repeat int `json:"repeat"`
	// Request latency percentiles of the LC vCPUs, µs.
	P50US  float64 `json:"p50_us"`
	P99US  float64 `json:"p99_us"`
	P999US float64 `json:"p999_us"`
	MaxUS  float64 `json:"max_us"`
	// RPS is requests completed per second (all LC vCPUs).
	RPS      float64 `json:"rps"`
	Requests uint64  `json:"requests"`
	// Scheduler actions per second.
	PreemptionsPerS float64 `json:"preemptions_per_s"`
	MigrationsPerS  float64 `json:"migrations_per_s"`
	// SchedCPUS is the scheduler thread's CPU time in seconds.
	SchedCPUS float64 `json:"sched_cpu_s"`
	// BatchWorkPerS is batch work done, in ~µs chunks per second.
	BatchWorkPerS float64 `json:"batch_work_per_s"`
	// Runqueue latency log2 histograms (bucket b counts
	// [2^(b-1), 2^b) µs; bucket 0 counts < 1µs), summed per class.
	LCRunqlat    *observer.Hist `json:"lc_runqlat_log2_us,omitempty"`
	BatchRunqlat *observer.Hist `json:"batch_runqlat_log2_us,omitempty"`
	// ForeignPerS counts foreign thread switch-ins on managed cores.
	ForeignPerS float64 `json:"foreign_per_s"`
	// ForeignCPU is the share of the managed cores' time that threads
	// other than the thread vCPUs used (from /proc/stat, less the vCPUs'
	// run time; needs the observer), StealCPU the share the hypervisor
	// took from this machine's CPUs ("steal"): both 0–1.
	ForeignCPU float64 `json:"foreign_cpu"`
	StealCPU   float64 `json:"steal_cpu"`
	// SchedErrors counts failed scheduler actions.
	SchedErrors uint64 `json:"sched_errors"`
	// CDF samples the LC request latency distribution.
	CDF []CDFPoint `json:"latency_cdf,omitempty"`
}

// CDFPoint is one point of a latency CDF: a fraction Q of requests took at
// most US microseconds.
type CDFPoint struct {
	Q  float64 `json:"q"`
	US float64 `json:"us"`
}

// Spread is the range of a figure over the repetitions counted.
type Spread struct {
	Min float64 `json:"min"`
	Max float64 `json:"max"`
}

// Summary is one policy's figures over the repetitions: medians, with
// their spreads, of the repetitions not flagged failed (of all of them if
// every one was).
type Summary struct {
	Policy string `json:"policy"`
	// Runs is how many repetitions the medians are over.
	Runs            int     `json:"runs"`
	P50US           float64 `json:"p50_us"`
	P99US           float64 `json:"p99_us"`
	P999US          float64 `json:"p999_us"`
	RPS             float64 `json:"rps"`
	BatchWorkPerS   float64 `json:"batch_work_per_s"`
	PreemptionsPerS float64 `json:"preemptions_per_s"`
	MigrationsPerS  float64 `json:"migrations_per_s"`
	SchedCPUS       float64 `json:"sched_cpu_s"`
	ForeignCPU      float64 `json:"foreign_cpu"`
	StealCPU        float64 `json:"steal_cpu"`
	// P99VsIsolated is the median p99 over the isolated median p99;
	// BatchVsLinux the median batch work over linux's (0 without a
	// linux run).
	P99VsIsolated float64 `json:"p99_vs_isolated"`
	BatchVsLinux  float64 `json:"batch_vs_linux,omitempty"`
	// Spreads holds the min and max of each median field, by its JSON
	// name.
	Spreads map[string]Spread `json:"spread"`
	// CDF is the latency CDF of the repetition with the median p99.
	CDF []CDFPoint `json:"latency_cdf,omitempty"`
	// LCRunqlat is that repetition's LC runqueue-latency histogram.
	LCRunqlat *observer.Hist `json:"lc_runqlat_log2_us,omitempty"`
}

// Repetition is one measurement of the whole set.
type Repetition struct {
	Repeat   int            `json:"repeat"`
	Isolated PolicyResult   `json:"isolated"`
	Policies []PolicyResult `json:"policies"`
	// Failed flags a repetition whose isolated p99 is worse than a
	// colocated one: the isolated run was disturbed, and the
	// repetition is not a measurement.
	Failed bool   `json:"failed"`
	Reason string `json:"reason,omitempty"`
	// Disturbed lists the runs in which other threads took more than
	// DisturbedCPU of the managed cores' time.
	Disturbed []string `json:"disturbed,omitempty"`
}

// DisturbedCPU is the share of the managed cores' time other threads may
// take in a run before the run is reported as disturbed.
const DisturbedCPU = 0.05

// Result is an experiment's outcome.
type Result struct {
	// Policies are the per-policy summaries, in the order run.
	Policies []Summary `json:"policies"`
	// IsolatedP99US is the isolated runs' median p99.
	IsolatedP99US float64  `json:"isolated_p99_us"`
	Isolated      *Summary `json:"isolated,omitempty"`
	// Repetitions are the single measurements.
	Repetitions []Repetition `json:"repetitions"`
	// Failed says that no repetition was a valid measurement, or that
	// the medians still put the isolated p99 above a colocated one; the
	// figures are then no result.
	Failed bool   `json:"failed"`
	Reason string `json:"reason,omitempty"`
	// Housekeeping says where the process's own threads were moved,
	// or why not.
	Housekeeping string     `json:"housekeeping"`
	Config       ConfigJSON `json:"config"`
}

// ConfigJSON records the parameters in the JSON output.
type ConfigJSON struct {
	LC             int     `json:"lc"`
	Batch          int     `json:"batch"`
	Cores          []int   `json:"cores"`
	SchedCPU       int     `json:"sched_cpu"`
	DurationS      float64 `json:"duration_s"`
	Repeat         int     `json:"repeat"`
	Load           float64 `json:"load"`
	Service        string  `json:"service"`
	PeriodUS       float64 `json:"period_us"`
	Mode           string  `json:"mode"`
	Sleep          bool    `json:"sleep"`
	IsolatedPolicy string  `json:"isolated_policy"`
	Nice           int     `json:"nice"`
	ThresholdUS    float64 `json:"central_threshold_us"`
	QuantumUS      float64 `json:"central_quantum_us"`
	Observer       bool    `json:"observer"`
}

// checkRepetition flags rep failed if its isolated p99 exceeds a
// colocated p99.
func checkRepetition(rep *Repetition) {
	for _, p := range append([]PolicyResult{rep.Isolated}, rep.Policies...) {
		if p.ForeignCPU > DisturbedCPU {
			rep.Disturbed = append(rep.Disturbed, fmt.Sprintf("%s: other threads took %.0f%% of the managed cores", p.Policy, 100*p.ForeignCPU))
		}
	}
	for _, p := range rep.Policies {
		if rep.Isolated.P99US > p.P99US {
			rep.Failed = true
			rep.Reason = fmt.Sprintf("isolated p99 %.1fµs is worse than %s's %.1fµs with batch vCPUs: the isolated run was disturbed", rep.Isolated.P99US, p.Policy, p.P99US)
			return
		}
	}
}

// summarize computes the summaries from r.Repetitions.
func (r *Result) summarize() {
	valid := make([]Repetition, 0, len(r.Repetitions))
	for _, rep := range r.Repetitions {
		if !rep.Failed {
			valid = append(valid, rep)
		}
	}
	if len(valid) == 0 {
		valid = r.Repetitions
		r.Failed = true
		r.Reason = fmt.Sprintf("every one of the %d repetitions failed (isolated worse than colocated): no result", len(r.Repetitions))
	}
	if len(valid) == 0 {
		return
	}
	iso := make([]PolicyResult, len(valid))
	for i, rep := range valid {
		iso[i] = rep.Isolated
	}
	s := summarize(iso)
	r.Isolated = &s
	r.IsolatedP99US = s.P99US
	r.Policies = nil
	for k := range valid[0].Policies {
		runs := make([]PolicyResult, 0, len(valid))
		for _, rep := range valid {
			if k < len(rep.Policies) {
				runs = append(runs, rep.Policies[k])
			}
		}
		r.Policies = append(r.Policies, summarize(runs))
	}
	var linux float64
	for _, p := range r.Policies {
		if p.Policy == "linux" {
			linux = p.BatchWorkPerS
		}
	}
	for i := range r.Policies {
		p := &r.Policies[i]
		if r.IsolatedP99US > 0 {
			p.P99VsIsolated = p.P99US / r.IsolatedP99US
		}
		if linux > 0 {
			p.BatchVsLinux = p.BatchWorkPerS / linux
		}
		if !r.Failed && r.IsolatedP99US > p.P99US {
			r.Failed = true
			r.Reason = fmt.Sprintf("median isolated p99 %.1fµs is worse than %s's %.1fµs: failed measurement", r.IsolatedP99US, p.Policy, p.P99US)
		}
	}
	r.Isolated.P99VsIsolated = 1
}

// summarize reduces one policy's runs to medians and spreads.
func summarize(runs []PolicyResult) Summary {
	s := Summary{Policy: runs[0].Policy, Runs: len(runs), Spreads: map[string]Spread{}}
	fields := []struct {
		name string
		dst  *float64
		get  func(*PolicyResult) float64
	}{
		{"p50_us", &s.P50US, func(p *PolicyResult) float64 { return p.P50US }},
		{"p99_us", &s.P99US, func(p *PolicyResult) float64 { return p.P99US }},
		{"p999_us", &s.P999US, func(p *PolicyResult) float64 { return p.P999US }},
		{"rps", &s.RPS, func(p *PolicyResult) float64 { return p.RPS }},
		{"batch_work_per_s", &s.BatchWorkPerS, func(p *PolicyResult) float64 { return p.BatchWorkPerS }},
		{"preemptions_per_s", &s.PreemptionsPerS, func(p *PolicyResult) float64 { return p.PreemptionsPerS }},
		{"migrations_per_s", &s.MigrationsPerS, func(p *PolicyResult) float64 { return p.MigrationsPerS }},
		{"sched_cpu_s", &s.SchedCPUS, func(p *PolicyResult) float64 { return p.SchedCPUS }},
		{"foreign_cpu", &s.ForeignCPU, func(p *PolicyResult) float64 { return p.ForeignCPU }},
		{"steal_cpu", &s.StealCPU, func(p *PolicyResult) float64 { return p.StealCPU }},
	}
	vals := make([]float64, len(runs))
	for _, f := range fields {
		for i := range runs {
			vals[i] = f.get(&runs[i])
		}
		m, lo, hi := median(vals)
		*f.dst = m
		s.Spreads[f.name] = Spread{Min: lo, Max: hi}
	}
	// The representative run: the one whose p99 is the median (the
	// lower middle one for an even count).
	idx := make([]int, len(runs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return runs[idx[a]].P99US < runs[idx[b]].P99US })
	rep := &runs[idx[(len(runs)-1)/2]]
	s.CDF, s.LCRunqlat = rep.CDF, rep.LCRunqlat
	return s
}

// median returns the median (the mean of the middle two for an even
// count), min and max of v; v is not modified.
func median(v []float64) (m, lo, hi float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		m = s[n/2]
	} else {
		m = (s[n/2-1] + s[n/2]) / 2
	}
	return m, s[0], s[n-1]
}

// WriteJSON writes r to path.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

func spreadOf(s *Summary, name, format string) string {
	sp, ok := s.Spreads[name]
	if !ok || s.Runs < 2 {
		return "-"
	}
	return fmt.Sprintf(format+"–"+format, sp.Min, sp.Max)
}

// WriteTable prints r as a table: per policy the medians over the
// repetitions, the p99's spread, the p99 relative to the isolated one and
// batch work relative to linux's; then the failed repetitions, and the
// verdict.
func (r *Result) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\truns\tp50 µs\tp99 µs\tp99 range\tp99.9 µs\tp99/isolated\tbatch work/s\tbatch/linux\tpreempt/s\tmigr/s\tsched CPU %\tforeign %\tsteal %\t")
	var rows []Summary
	if r.Isolated != nil {
		iso := *r.Isolated
		iso.Policy = "isolated"
		rows = append(rows, iso)
	}
	rows = append(rows, r.Policies...)
	dur := r.Config.DurationS
	for i := range rows {
		p := &rows[i]
		rel, blin := "-", "-"
		if r.IsolatedP99US > 0 {
			rel = fmt.Sprintf("%.2fx", p.P99VsIsolated)
		}
		if p.BatchVsLinux > 0 {
			blin = fmt.Sprintf("%.0f%%", 100*p.BatchVsLinux)
		}
		schedPct := 0.0
		if dur > 0 {
			schedPct = 100 * p.SchedCPUS / dur
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%s\t%.1f\t%s\t%.0f\t%s\t%.0f\t%.0f\t%.1f\t%.1f\t%.1f\t\n",
			p.Policy, p.Runs, p.P50US, p.P99US, spreadOf(p, "p99_us", "%.0f"), p.P999US, rel, p.BatchWorkPerS, blin,
			p.PreemptionsPerS, p.MigrationsPerS, schedPct, 100*p.ForeignCPU, 100*p.StealCPU)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nmedians over the repetitions not flagged failed; p99 range: min–max; sched CPU, foreign and steal: %% of a core, of the managed cores, of all CPUs\n")
	if r.Housekeeping != "" {
		fmt.Fprintf(w, "housekeeping: %s\n", r.Housekeeping)
	}
	for _, rep := range r.Repetitions {
		if rep.Failed {
			fmt.Fprintf(w, "repetition %d FAILED: %s\n", rep.Repeat, rep.Reason)
		}
		for _, d := range rep.Disturbed {
			fmt.Fprintf(w, "repetition %d disturbed: %s\n", rep.Repeat, d)
		}
	}
	if r.Failed {
		fmt.Fprintf(w, "FAILED MEASUREMENT: %s\n", r.Reason)
	}
	for _, p := range rows {
		if p.LCRunqlat != nil && p.LCRunqlat.Count() > 0 {
			fmt.Fprintf(w, "\n%s: LC vCPU runqueue latency (median run)\n", p.Policy)
			p.LCRunqlat.Print(w)
		}
	}
}
