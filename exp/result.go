package exp

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"time"
)

// Result is everything an experiment produced; results.json holds it.
type Result struct {
	// File is the experiment file; Started and Ended the wall times.
	File           string    `json:"file"`
	Started, Ended time.Time `json:"-"`
	StartedAt      string    `json:"started"`
	EndedAt        string    `json:"ended"`
	Host           HostInfo  `json:"host"`
	Config         Config    `json:"config"`
	// Runs are every phase of every repeat, in the order they ran.
	Runs []*PhaseResult `json:"runs"`
	// Summary has one entry per phase: medians and spreads over the
	// repeats that are not failed measurements.
	Summary []*PhaseSummary `json:"summary"`
	// FailedRepeats are the repeats left out of the summary, with why.
	FailedRepeats map[int]string `json:"failed_repeats,omitempty"`
	// Failed is set when no repeat is left: the summary then covers all
	// of them and none of its figures is a result.
	Failed bool `json:"failed"`
	// Notes are facts a reader needs (what was sampled how, what is not
	// measured here).
	Notes []string `json:"notes"`
}

// HostInfo describes where the experiment ran.
type HostInfo struct {
	CPUs    int    `json:"cpus"`
	Kernel  string `json:"kernel"`
	Sandbox bool   `json:"sandbox"`
	// Timers are the host kernel's timer arguments (nohz=, highres=,
	// lapic=, clocksource=), which set the latency floor of every timed
	// wake-up: "" when it has none of them.
	Timers string `json:"timers"`
}

// Config is the experiment as run.
type Config struct {
	Boot      string   `json:"boot"`
	Repeats   int      `json:"repeats"`
	WarmupS   float64  `json:"warmup_s"`
	DurationS float64  `json:"duration_s"`
	Phases    []string `json:"phases"`
	LC        []string `json:"lc"`
	Batch     []string `json:"batch"`
	Cores     []int    `json:"managed_cores"`
	SchedCPU  *int     `json:"sched_cpu,omitempty"`
	Mode      string   `json:"sched_mode"`
	PeriodUS  float64  `json:"sched_period_us"`
	Pollers   []int    `json:"poller_cores"`
	Client    []int    `json:"client_cpus"`
}

// PhaseResult is one phase of one repeat.
type PhaseResult struct {
	Phase    string        `json:"phase"`
	Repeat   int           `json:"repeat"`
	Isolated bool          `json:"isolated"`
	Policy   PolicyInfo    `json:"policy"`
	Started  string        `json:"started"`
	MeasureS float64       `json:"measured_s"`
	LC       []*LCResult   `json:"lc"`
	Batch    []BatchResult `json:"batch"`
	VCPUs    []VCPUResult  `json:"vcpus"`
	Sched    SchedResult   `json:"sched"`
	VMs      []VMResult    `json:"vms"`
	Timeline *Timeline     `json:"timeline,omitempty"`
	// Error is why the phase has no (or partial) figures.
	Error string `json:"error,omitempty"`
}

// PolicyInfo is a policy with its parameters.
type PolicyInfo struct {
	Name        string  `json:"name"`
	ThresholdUS float64 `json:"threshold_us,omitempty"`
	QuantumUS   float64 `json:"quantum_us,omitempty"`
	GraceUS     float64 `json:"grace_us,omitempty"`
}

// LCResult is one LC workload's figures in a phase.
type LCResult struct {
	Workload string `json:"workload"`
	Server   string `json:"server"`
	Client   string `json:"client"`
	// Sent and Received are the client's messages and replies over its
	// whole run; ServerReceived is what reached the server's UDP layer
	// (guest /proc/net/snmp InDatagrams + InErrors; -1 for TCP, which
	// it cannot count per message).
	Sent           uint64 `json:"sent"`
	Received       uint64 `json:"received"`
	ServerReceived int64  `json:"server_received"`
	ServerDropped  int64  `json:"server_dropped"`
	// ValidS and Observations are the measured part of sockperf's run.
	ValidS       float64 `json:"valid_s"`
	Observations uint64  `json:"observations"`
	// RTT percentiles as the client measured them (µs).
	P50US  float64 `json:"p50_us"`
	P99US  float64 `json:"p99_us"`
	P999US float64 `json:"p99_9_us"`
	MeanUS float64 `json:"mean_us"`
	MaxUS  float64 `json:"max_us"`
	// CDF is the RTT distribution (from the client's full log, or its
	// percentile lines for a client in a guest).
	CDF   []CDFPoint `json:"cdf"`
	Error string     `json:"error,omitempty"`
	rtts  []float64  // the full log's RTTs, sorted
}

// VCPUResult is one vCPU's scheduling in a phase's measured time.
type VCPUResult struct {
	VCPU  string `json:"vcpu"`
	Class string `json:"class"`
	// RunS is time on a host CPU, WaitS time runnable on a host runqueue
	// ("CPU ready"), from the eBPF observer.
	RunS        float64 `json:"run_s"`
	WaitS       float64 `json:"wait_s"`
	Preemptions uint64  `json:"preemptions"`
	Switches    uint64  `json:"switches"`
	Wakeups     uint64  `json:"wakeups"`
	// Migrations is the kernel's count for the thread (se.nr_migrations);
	// -1 when /proc does not show it.
	Migrations int64 `json:"migrations"`
	// WaitHist is the runqueue-latency histogram (log2 µs buckets: 0 is
	// [0,1) µs, b ≥ 1 is [2^(b-1), 2^b) µs), WaitP50US/WaitP99US its
	// quantiles (bucket upper bounds).
	WaitHist  []uint32 `json:"wait_hist"`
	WaitP50US float64  `json:"wait_p50_us"`
	WaitP99US float64  `json:"wait_p99_us"`
}

// SchedResult is the scheduler's work in a phase's measured time.
type SchedResult struct {
	Passes     uint64  `json:"passes"`
	Parks      uint64  `json:"parks"`
	Unparks    uint64  `json:"unparks"`
	Migrations uint64  `json:"migrations"`
	Errors     uint64  `json:"errors"`
	CPUS       float64 `json:"cpu_s"`
	PassS      float64 `json:"pass_s"`
	// CPUPct is CPUS over the measured time, in percent of one core.
	CPUPct float64 `json:"cpu_pct"`
}

// VMResult is one VM's counters in a phase's measured time.
type VMResult struct {
	Name string `json:"name"`
	// StealS is the guest's steal time (/proc/stat, all its vCPUs); NaN
	// (null) when the guest could not be asked.
	StealS   *float64 `json:"steal_s"`
	Exits    uint64   `json:"exits"`
	Kicks    uint64   `json:"kicks"`
	Parks    uint64   `json:"parks"`
	Paused   bool     `json:"paused"`
	GuestErr string   `json:"guest_error,omitempty"`
}

// Stat is a median with its spread.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

func statOf(xs []float64) Stat {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Stat{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	sort.Float64s(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Stat{Median: m, Min: v[0], Max: v[len(v)-1], N: len(v)}
}

// MarshalJSON writes NaN as null.
func (s Stat) MarshalJSON() ([]byte, error) {
	f := func(x float64) any {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return x
	}
	return json.Marshal(map[string]any{"median": f(s.Median), "min": f(s.Min), "max": f(s.Max), "n": s.N})
}

// PhaseSummary is one phase over the repeats kept.
type PhaseSummary struct {
	Phase   string       `json:"phase"`
	Repeats []int        `json:"repeats"`
	LC      []*LCSummary `json:"lc"`
	// BatchOpsPerSec sums the batch workloads' bogo ops/s;
	// BatchVsLinux is its median over linux's (NaN without linux).
	BatchOpsPerSec Stat `json:"batch_ops_per_sec"`
	BatchVsLinux   Num  `json:"batch_vs_linux"`
	// SchedCPUPct, PassesPerSec, USPerPass, ParksPerSec and
	// MigrationsPerSec are the scheduler's cost.
	SchedCPUPct      Stat `json:"sched_cpu_pct"`
	PassesPerSec     Stat `json:"passes_per_sec"`
	USPerPass        Stat `json:"us_per_pass"`
	ParksPerSec      Stat `json:"parks_per_sec"`
	MigrationsPerSec Stat `json:"migrations_per_sec"`
	// LCWaitS and BatchWaitS sum the classes' vCPU CPU-ready seconds;
	// LCStealS the LC VMs' guest steal seconds.
	LCWaitS    Stat `json:"lc_wait_s"`
	BatchWaitS Stat `json:"batch_wait_s"`
	LCStealS   Stat `json:"lc_steal_s"`
	// ExitsPerSec counts all VMs' exits per second of measured time.
	ExitsPerSec Stat `json:"exits_per_sec"`
}

// LCSummary is one LC workload in one phase over the repeats kept.
type LCSummary struct {
	Workload string `json:"workload"`
	P50US    Stat   `json:"p50_us"`
	P99US    Stat   `json:"p99_us"`
	P999US   Stat   `json:"p99_9_us"`
	// Sent sums the client's messages, Received its replies, Server
	// what the server got, over the kept repeats.
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Server   int64  `json:"server_received"`
	// P99VsIsolated is the median p99 over the isolated run's (NaN
	// without one).
	P99VsIsolated Num `json:"p99_vs_isolated"`
	// CDF pools the kept repeats' round trips.
	CDF []CDFPoint `json:"cdf"`
}

// Num is a number that may be missing (NaN), written as null.
type Num float64

// MarshalJSON implements json.Marshaler.
func (n Num) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(n))
}

// WriteJSON writes r as indented JSON.
func (r *Result) WriteJSON(path string) error {
	r.StartedAt, r.EndedAt = r.Started.UTC().Format(time.RFC3339), r.Ended.UTC().Format(time.RFC3339)
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
