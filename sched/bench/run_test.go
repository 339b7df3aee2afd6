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
		Duration: 300 * time.Millisecond, Sleep: true, Period: 20 * time.Microsecond,
	}
	var progress bytes.Buffer
	res, err := Run(context.Background(), cfg, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Policies) != 3 || res.Isolated == nil {
		t.Fatalf("got %d policies, isolated %v", len(res.Policies), res.Isolated)
	}
	for _, p := range append(res.Policies, *res.Isolated) {
		// 0.2 load at 20µs mean: 10000 req/s, 3000 in 300ms.
		if p.Requests < 500 || p.P50US <= 0 || p.P99US < p.P50US || p.P999US < p.P99US {
			t.Errorf("%s: implausible %+v", p.Policy, p)
		}
		if p.LCRunqlat == nil || p.LCRunqlat.Count() == 0 {
			t.Errorf("%s: empty LC runqueue-latency histogram", p.Policy)
		}
	}
	for _, p := range res.Policies {
		switch p.Policy {
		case "linux", "pinned":
			if p.PreemptionsPerS != 0 {
				t.Errorf("%s preempted %v/s", p.Policy, p.PreemptionsPerS)
			}
		case "central":
			// Two batch vCPUs on one core time-slice every 2ms.
			if p.PreemptionsPerS < 100 {
				t.Errorf("central: %v preemptions/s", p.PreemptionsPerS)
			}
		}
		if p.BatchWorkPerS <= 0 {
			t.Errorf("%s: batch vCPUs did no work", p.Policy)
		}
	}
	if !strings.Contains(progress.String(), "[central ]") {
		t.Errorf("no progress line for central in %q", progress.String())
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
	if len(pols) != 3 || m["isolated_p99_us"] == nil {
		t.Fatalf("JSON lacks policies or isolated_p99_us: %s", b)
	}
	for _, k := range []string{"policy", "p50_us", "p99_us", "p999_us", "rps", "preemptions_per_s", "migrations_per_s", "sched_cpu_s"} {
		if _, ok := pols[0].(map[string]any)[k]; !ok {
			t.Errorf("JSON policy entry lacks %q", k)
		}
	}
	var tab bytes.Buffer
	res.WriteTable(&tab)
	t.Logf("\n%s", tab.String())
}

func TestConfigRejectsBadInput(t *testing.T) {
	for _, c := range []Config{
		{LC: 0},
		{LC: 1, Policies: []string{"cfs"}},
		{LC: 1, Cores: []int{999}},
	} {
		if err := c.setDefaults(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
