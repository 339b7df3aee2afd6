package exp

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/testenv"
)

// kvmTestFile is the test's experiment, scaled for the 2-CPU KVM sandbox
// (30–50× slower than metal): the LC server guest and a batch guest
// spinning stress-ng share managed core 1; the pollers, the scheduler
// thread and sockperf's client (on this host, through the TAP uplink)
// have CPU 0. The load keeps the server busy, which is where CFS makes an
// LC wake-up wait behind the batch vCPU and central does not (its
// threshold, 1 ms like TestKVMUpCentral's, fits the sandbox).
const kvmTestFile = `pollers: {cores: [0]}
sched: {cores: [1], cpu: 0, mode: sleep, period: 1ms}
switches: [{name: sw0, uplinks: [{tap: colexp0}]}]
vms:
  - {name: server, class: lc, nics: [{switch: sw0}]}
  - {name: batch, class: batch}
experiment:
  repeats: 3
  warmup: 1s
  duration: 3s
  isolated: pinned
  policies: [linux, {policy: central, threshold: 1ms}]
  lc: [{server: server, client: host, mps: MPS}]
  batch: [{vm: batch, args: "--cpu 1"}]
  timeline: {rate: 200, seconds: 1}
`

// TestKVMExpReport_CPUs2 runs 'colibri exp' on two stock guests with a
// real client and checks what it wrote: results.json and the report with
// a row per phase, the client's request count equal to the server's in
// every phase, monotone CDFs and batch results in every colocated phase.
func TestKVMExpReport_CPUs2(t *testing.T) {
	testenv.RequireKVM(t)
	if runtime.NumCPU() < 2 {
		t.Fatalf("needs 2 CPUs (scripts/run-kvm-tests gives a test named *_CPUs2 a 2-CPU sandbox), have %d", runtime.NumCPU())
	}
	if _, err := exec.LookPath("sockperf"); err != nil {
		t.Fatalf("sockperf missing on the host (make deps installs it): %v", err)
	}
	images := testenv.Images(t)
	if _, err := os.Stat(filepath.Join(images, "initrd-pkgs.img")); err != nil {
		t.Fatalf("%v: run 'make images' (GUEST_PKGS holds sockperf and stress-ng)", err)
	}
	bin := testenv.Binary(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "exp.yaml")
	if err := os.WriteFile(file, []byte(strings.Replace(kvmTestFile, "MPS", "300", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, bin, "exp", file, "--out", out, "--images", images)
	b, err := cmd.CombinedOutput()
	t.Logf("colibri exp (%v):\n%s", time.Since(start).Round(time.Second), b)
	if md, rerr := os.ReadFile(filepath.Join(out, "report.md")); rerr == nil {
		t.Logf("report.md:\n%s", md)
	} else {
		t.Errorf("no report: %v", rerr)
	}
	if err != nil {
		t.Fatalf("colibri exp: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res Result
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if s, e := res.StartedAt, res.EndedAt; s == "" || e < s {
		t.Errorf("results.json: started %q, ended %q", s, e)
	}
	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	want := []string{IsolatedLabel, "linux", "central threshold=1ms"}
	for _, ph := range want {
		if !strings.Contains(string(md), "| "+ph+" |") {
			t.Errorf("report.md has no row for %s", ph)
		}
	}
	if len(res.Runs) != 3*len(want) {
		t.Fatalf("%d runs, want %d", len(res.Runs), 3*len(want))
	}
	p99 := map[string][]float64{}
	for _, pr := range res.Runs {
		if pr.Error != "" || len(pr.LC) != 1 {
			t.Errorf("%s: error %q, %d LC results", pr.Phase, pr.Error, len(pr.LC))
			continue
		}
		l := pr.LC[0]
		if l.Error != "" || l.Observations == 0 {
			t.Errorf("%s: client error %q, %d observations", pr.Phase, l.Error, l.Observations)
		}
		if l.Sent == 0 || int64(l.Sent) != l.ServerReceived {
			t.Errorf("%s: the client sent %d requests, the server got %d", pr.Phase, l.Sent, l.ServerReceived)
		}
		assertMonotone(t, l.CDF)
		if !pr.Isolated && (len(pr.Batch) != 1 || pr.Batch[0].Error != "" || pr.Batch[0].OpsPerSec <= 0) {
			t.Errorf("%s: batch %+v", pr.Phase, pr.Batch)
		}
		p99[pr.Phase] = append(p99[pr.Phase], l.P99US)
	}
	for _, ps := range res.Summary {
		if len(ps.LC) == 1 {
			assertMonotone(t, ps.LC[0].CDF)
		}
	}
	// In the sandbox the isolated run is within the noise of the
	// colocated ones (the round trip's floor is the emulation's), so a
	// repeat flagged failed is said, not failed on; the flagging itself
	// is tested without KVM.
	if len(res.FailedRepeats) > 0 {
		t.Logf("repeats flagged as failed measurements: %v", res.FailedRepeats)
	}
	// Not asserted: that central beats linux on LC p99. In the sandbox the
	// round trip's floor (~6 ms) is the emulation's and the LC vCPU's
	// runqueue wait is at most ~1 ms under either policy, so the medians
	// of 3 repeats went either way (central 12.8 vs linux 17.0 ms, then
	// 16.0 vs 14.5 ms): the figures are logged for the record.
	t.Logf("LC p99, median of 3 repeats (sandbox): central %.0f µs, linux %.0f µs (central %v, linux %v)",
		median(p99["central threshold=1ms"]), median(p99["linux"]), p99["central threshold=1ms"], p99["linux"])
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
