package exp

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// synthetic returns a result of f's phases over two repeats: repeat 2's
// isolated run is worse than its central run.
func synthetic(t *testing.T, f *File) *Result {
	t.Helper()
	res := &Result{File: "x.yaml", Started: time.Now(), Ended: time.Now(), Config: Config{Repeats: 2, Phases: f.Phases()}}
	for rep := 1; rep <= 2; rep++ {
		for i, ph := range f.Phases() {
			p99 := 100.0 * float64(i+1)
			if rep == 2 && ph == IsolatedLabel {
				p99 = 1e6
			}
			var rtts []float64
			for k := 1; k <= 100; k++ {
				rtts = append(rtts, p99*float64(k)/99)
			}
			pr := &PhaseResult{Phase: ph, Repeat: rep, Isolated: ph == IsolatedLabel, MeasureS: 3,
				LC:    []*LCResult{{Workload: f.LC[0].Name(), Sent: 100, Received: 100, ServerReceived: 100, P50US: p99 / 2, P99US: p99, Observations: 100, CDF: cdfOf(rtts), rtts: rtts}},
				Sched: SchedResult{Passes: 3000, PassS: 0.03, CPUS: 0.3, CPUPct: 10},
				VCPUs: []VCPUResult{{VCPU: "server/0", Class: "lc", WaitS: 0.1, WaitHist: make([]uint32, 32)}, {VCPU: "batch/0", Class: "batch", WaitS: 1}},
				Timeline: &Timeline{RateHz: 100, VCPUs: []string{"server/0", "batch/0"}, Cores: []int{1},
					TS: []float64{0, 0.01, 0.02, 0.03}, CPU: [][]int16{{1, -1}, {-2, 1}, {-1, 1}, {1, -2}}}}
			if ph != IsolatedLabel {
				pr.Batch = []BatchResult{{VM: "batch", OpsPerSec: 1000 - 100*float64(i)}}
			}
			res.Runs = append(res.Runs, pr)
		}
	}
	return res
}

func TestSummaryFlagsWorseIsolated(t *testing.T) {
	f, err := Parse([]byte(goodFile), "")
	if err != nil {
		t.Fatal(err)
	}
	res := synthetic(t, f)
	summarize(f, res)
	if _, bad := res.FailedRepeats[2]; !bad || len(res.FailedRepeats) != 1 || res.Failed {
		t.Fatalf("failed repeats %v (failed %v), want repeat 2 only", res.FailedRepeats, res.Failed)
	}
	if !strings.Contains(res.FailedRepeats[2], "not a win") {
		t.Errorf("reason %q", res.FailedRepeats[2])
	}
	iso, linux := res.Summary[0], res.Summary[1]
	if iso.Phase != IsolatedLabel || iso.LC[0].P99US.Median != 100 || iso.LC[0].P99US.N != 1 {
		t.Errorf("isolated summary %+v: want repeat 1's 100 µs alone", iso.LC[0].P99US)
	}
	if got := float64(linux.LC[0].P99VsIsolated); got != 2 {
		t.Errorf("linux p99/isolated = %g, want 2", got)
	}
	if got := float64(linux.BatchVsLinux); got != 1 {
		t.Errorf("linux batch vs linux %g", got)
	}
	if !math.IsNaN(float64(iso.BatchVsLinux)) && iso.BatchOpsPerSec.N != 0 {
		t.Errorf("the isolated run has batch figures: %+v", iso.BatchOpsPerSec)
	}
	if got := linux.USPerPass.Median; math.Abs(got-10) > 1e-9 {
		t.Errorf("µs per pass %g, want 10", got)
	}
	assertMonotone(t, linux.LC[0].CDF)

	// Every repeat failed: the whole result is a failed measurement.
	for _, pr := range res.Runs {
		if pr.Isolated {
			pr.LC[0].P99US = 1e7
		}
	}
	summarize(f, res)
	if !res.Failed || len(res.FailedRepeats) != 2 {
		t.Errorf("failed %v, repeats %v", res.Failed, res.FailedRepeats)
	}
}

func TestWriteOutputs(t *testing.T) {
	f, err := Parse([]byte(goodFile), "")
	if err != nil {
		t.Fatal(err)
	}
	res := synthetic(t, f)
	summarize(f, res)
	dir := t.TempDir()
	if err := res.WriteJSON(filepath.Join(dir, "results.json")); err != nil {
		t.Fatal(err)
	}
	if err := WriteReport(res, dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ph := range f.Phases() {
		if !strings.Contains(string(md), "| "+ph+" |") {
			t.Errorf("report.md has no row for %s", ph)
		}
	}
	svgs, _ := filepath.Glob(filepath.Join(dir, "*.svg"))
	if len(svgs) != 2+len(f.Phases()) {
		t.Errorf("plots %v: want the CDF, batch and one timeline per phase", svgs)
	}
	for _, s := range svgs {
		if !strings.Contains(string(md), filepath.Base(s)) {
			t.Errorf("report.md does not show %s", filepath.Base(s))
		}
		data, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(strings.NewReader(string(data)))
		for {
			_, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: not well-formed XML: %v", s, err)
			}
		}
	}
}

func TestTimerArgs(t *testing.T) {
	for in, want := range map[string]string{
		"console=ttyS1 quiet nohz=off highres=off lapic=notscdeadline colibri.job=/x": "nohz=off highres=off lapic=notscdeadline",
		"BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet":                                 "",
		"clocksource=tsc tsc=reliable nohz_full=2-3":                                  "clocksource=tsc tsc=reliable nohz_full=2-3",
	} {
		if got := timerArgs(in); got != want {
			t.Errorf("timerArgs(%q) = %q, want %q", in, got, want)
		}
	}
}
