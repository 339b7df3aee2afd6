package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunAllPolicies(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test loads the eBPF observer and must run as root ('make test' runs it as root)")
	}
	cfg := Config{
		Policies: []string{"all"}, LC: 1, Batch: 2, SchedCPU: 0, Cores: []int{1},
		Duration: 300 * time.Millisecond, Sleep: true, Period: 20 * time.Microsecond, Repeat: 2,
	}
	var progress bytes.Buffer
	res, err := Run(context.Background(), cfg, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Policies) != 4 || res.Isolated == nil || len(res.Repetitions) != 2 {
		t.Fatalf("got %d policies, isolated %v, %d repetitions", len(res.Policies), res.Isolated, len(res.Repetitions))
	}
	for _, rep := range res.Repetitions {
		for _, p := range append(rep.Policies, rep.Isolated) {
			// 0.2 load at 20µs mean: 10000 req/s, 3000 in 300ms.
			if p.Requests < 500 || p.P50US <= 0 || p.P99US < p.P50US || p.P999US < p.P99US || p.Repeat != rep.Repeat {
				t.Errorf("repetition %d, %s: implausible %+v", rep.Repeat, p.Policy, p)
			}
			if p.LCRunqlat == nil || p.LCRunqlat.Count() == 0 {
				t.Errorf("%s: empty LC runqueue-latency histogram", p.Policy)
			}
			if p.ForeignCPU < 0 || p.ForeignCPU > 1 || p.StealCPU < 0 || p.StealCPU > 1 {
				t.Errorf("%s: foreign %v, steal %v not shares", p.Policy, p.ForeignCPU, p.StealCPU)
			}
		}
	}
	for _, p := range res.Policies {
		switch p.Policy {
		case "linux", "pinned":
			if p.PreemptionsPerS != 0 {
				t.Errorf("%s preempted %v/s", p.Policy, p.PreemptionsPerS)
			}
		case "central", "adaptive":
			// Two batch vCPUs on one core time-slice (2ms, 1ms).
			if p.PreemptionsPerS < 100 {
				t.Errorf("%s: %v preemptions/s", p.Policy, p.PreemptionsPerS)
			}
		}
		if p.BatchWorkPerS <= 0 || p.BatchVsLinux <= 0 {
			t.Errorf("%s: batch work %v/s, %v of linux's", p.Policy, p.BatchWorkPerS, p.BatchVsLinux)
		}
		if sp := p.Spreads["p99_us"]; p.Runs > 0 && (sp.Min > p.P99US || sp.Max < p.P99US) {
			t.Errorf("%s: median p99 %v outside its spread %+v", p.Policy, p.P99US, sp)
		}
	}
	if !strings.Contains(progress.String(), "[2/2 adaptive]") {
		t.Errorf("no progress line for the second adaptive run in %q", progress.String())
	}
	path := filepath.Join(t.TempDir(), "r.json")
	if err := res.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	pols, _ := m["policies"].([]any)
	if len(pols) != 4 || m["isolated_p99_us"] == nil || m["repetitions"] == nil || m["failed"] == nil {
		t.Fatalf("JSON lacks policies, isolated_p99_us, repetitions or failed: %s", b)
	}
	for _, k := range []string{"policy", "runs", "p50_us", "p99_us", "p999_us", "rps", "preemptions_per_s", "migrations_per_s", "sched_cpu_s", "p99_vs_isolated", "spread"} {
		if _, ok := pols[0].(map[string]any)[k]; !ok {
			t.Errorf("JSON policy entry lacks %q", k)
		}
	}
	var tab bytes.Buffer
	res.WriteTable(&tab)
	t.Logf("\n%s", tab.String())
}

// A repetition whose isolated p99 is worse than a colocated one is a
// failed measurement: flagged, and left out of the medians.
func TestFailedRepetition(t *testing.T) {
	run := func(rep int, iso float64, p99s ...float64) Repetition {
		r := Repetition{Repeat: rep, Isolated: PolicyResult{Policy: "isolated", P99US: iso, Repeat: rep}}
		for i, p := range p99s {
			name := []string{"linux", "central"}[i]
			r.Policies = append(r.Policies, PolicyResult{Policy: name, P99US: p, BatchWorkPerS: 100 * float64(i+1), Repeat: rep})
		}
		checkRepetition(&r)
		return r
	}
	res := &Result{Repetitions: []Repetition{
		run(1, 100, 5000, 150),
		run(2, 4000, 6000, 170), // isolated disturbed: worse than central
		run(3, 120, 7000, 160),
	}}
	res.Repetitions[1].Isolated.ForeignCPU = 0.4
	checkRepetition(&res.Repetitions[1])
	res.summarize()
	if d := res.Repetitions[1].Disturbed; len(d) != 1 || !strings.Contains(d[0], "isolated: other threads took 40%") {
		t.Fatalf("disturbed runs %q", d)
	}
	if !res.Repetitions[1].Failed || res.Repetitions[0].Failed || res.Repetitions[2].Failed {
		t.Fatalf("failed flags %v %v %v, want only repetition 2", res.Repetitions[0].Failed, res.Repetitions[1].Failed, res.Repetitions[2].Failed)
	}
	if res.Failed || res.IsolatedP99US != 110 || res.Isolated.Runs != 2 {
		t.Fatalf("result failed %v, isolated median %v over %d runs: want 110 over 2", res.Failed, res.IsolatedP99US, res.Isolated.Runs)
	}
	c := res.Policies[1]
	if c.Policy != "central" || c.P99US != 155 || c.Spreads["p99_us"] != (Spread{150, 160}) || c.BatchVsLinux != 2 {
		t.Fatalf("central summary %+v", c)
	}
	var tab bytes.Buffer
	res.WriteTable(&tab)
	if !strings.Contains(tab.String(), "repetition 2 FAILED") || strings.Contains(tab.String(), "FAILED MEASUREMENT") {
		t.Fatalf("table:\n%s", tab.String())
	}
	// Every repetition failed: the result is no result.
	all := &Result{Repetitions: []Repetition{run(1, 500, 900, 200)}}
	all.summarize()
	if !all.Failed {
		t.Fatal("a result with every repetition failed is not flagged")
	}
	tab.Reset()
	all.WriteTable(&tab)
	if !strings.Contains(tab.String(), "FAILED MEASUREMENT") {
		t.Fatalf("table:\n%s", tab.String())
	}
}

func TestParseCPUStat(t *testing.T) {
	st, err := parseCPUStat("cpu  10 0 10 500 0 0 0 3 0 0\ncpu0 1 2 3 400 5 6 7 8 0 0\ncpu1 0 0 0 100 0 0 0 0 0 0\nintr 5\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0] != (cpuTimes{busy: 1 + 2 + 3 + 6 + 7, steal: 8}) {
		t.Fatalf("got %+v", st)
	}
	a := map[int]cpuTimes{0: {busy: 0}, 1: {busy: 0}}
	b := map[int]cpuTimes{0: {busy: 50, steal: 10}, 1: {busy: 100}}
	// 1s: core 1 was busy 1s, of which the vCPUs ran 0.75s; 0.1s of
	// the two CPUs' 2s was stolen.
	f, s := interference(a, b, []int{1}, 750*time.Millisecond, time.Second, true)
	if f != 0.25 || s != 0.05 {
		t.Fatalf("foreign %v, steal %v, want 0.25, 0.05", f, s)
	}
}

func TestConfigRejectsBadInput(t *testing.T) {
	for _, c := range []Config{
		{LC: 0},
		{LC: 1, Policies: []string{"cfs"}},
		{LC: 1, Cores: []int{999}},
		{LC: 1, IsolatedPolicy: "cfs"},
	} {
		if err := c.setDefaults(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
