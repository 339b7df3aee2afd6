package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/colibrivm/colibri/sched/observer"
)

// PolicyResult is one policy's measurements.
type PolicyResult struct {
	Policy string `json:"policy"`
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

// Result is an experiment's outcome.
type Result struct {
	Policies []PolicyResult `json:"policies"`
	// IsolatedP99US is the LC p99 with no batch vCPUs, same run.
	IsolatedP99US float64       `json:"isolated_p99_us"`
	Isolated      *PolicyResult `json:"isolated,omitempty"`
	Config        ConfigJSON    `json:"config"`
}

// ConfigJSON records the parameters in the JSON output.
type ConfigJSON struct {
	LC          int     `json:"lc"`
	Batch       int     `json:"batch"`
	Cores       []int   `json:"cores"`
	SchedCPU    int     `json:"sched_cpu"`
	DurationS   float64 `json:"duration_s"`
	Load        float64 `json:"load"`
	Service     string  `json:"service"`
	PeriodUS    float64 `json:"period_us"`
	Sleep       bool    `json:"sleep"`
	ThresholdUS float64 `json:"central_threshold_us"`
	QuantumUS   float64 `json:"central_quantum_us"`
	Observer    bool    `json:"observer"`
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

// WriteTable prints r as a table, with each policy's p99 relative to the
// isolated p99.
func (r *Result) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tp50 µs\tp99 µs\tp99.9 µs\tp99/isolated\treq/s\tpreempt/s\tmigr/s\tsched CPU s\tbatch work/s\t")
	rows := r.Policies
	if r.Isolated != nil {
		rows = append([]PolicyResult{*r.Isolated}, rows...)
	}
	for _, p := range rows {
		rel := "-"
		if r.IsolatedP99US > 0 {
			rel = fmt.Sprintf("%.2fx", p.P99US/r.IsolatedP99US)
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%s\t%.0f\t%.0f\t%.0f\t%.3f\t%.0f\t\n",
			p.Policy, p.P50US, p.P99US, p.P999US, rel, p.RPS, p.PreemptionsPerS, p.MigrationsPerS, p.SchedCPUS, p.BatchWorkPerS)
	}
	tw.Flush()
	for _, p := range rows {
		if p.LCRunqlat != nil && p.LCRunqlat.Count() > 0 {
			fmt.Fprintf(w, "\n%s: LC vCPU runqueue latency\n", p.Policy)
			p.LCRunqlat.Print(w)
		}
	}
}
