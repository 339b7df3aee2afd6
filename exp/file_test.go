package exp

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/colibrivm/colibri/host/spec"
)

const goodFile = `# an experiment
pollers: {cores: [0]}
sched: {cores: [1], cpu: 0, period: 1ms}
switches: [{name: sw0, uplinks: [{tap: colexp0}]}]
vms:
  - {name: server, class: lc, nics: [{switch: sw0}]}
  - {name: batch, class: batch}
experiment:
  repeats: 2
  warmup: 1s
  duration: 3s
  policies:
    - linux
    - {policy: central, threshold: [500us, 1ms], grace: 20us}
    - {policy: pinned, label: static}
  lc:
    - {server: server, mps: 500}
  batch:
    - {vm: batch, args: "--cpu 1"}
  timeline: {rate: 200, seconds: 1.5}
`

func TestParseFile(t *testing.T) {
	f, err := Parse([]byte(goodFile), "")
	if err != nil {
		t.Fatal(err)
	}
	if f.Boot != BootOnce || f.Repeats != 2 || f.Warmup != time.Second || f.Duration != 3*time.Second {
		t.Errorf("boot %q repeats %d warmup %v duration %v", f.Boot, f.Repeats, f.Warmup, f.Duration)
	}
	if f.Isolated == nil || f.Isolated.Name != spec.PolicyPinned {
		t.Errorf("isolated = %+v, want the pinned default", f.Isolated)
	}
	want := []string{"isolated", "linux", "central threshold=500µs grace=20µs", "central threshold=1ms grace=20µs", "static"}
	if got := f.Phases(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("phases %q, want %q", got, want)
	}
	if p := f.Policies[2].Spec; p.Threshold != time.Millisecond || p.Grace != 20*time.Microsecond {
		t.Errorf("sweep entry = %+v", p)
	}
	if len(f.LC) != 1 || f.LC[0].Client != ClientHost || f.LC[0].MPS != 500 || f.LC[0].Port != DefaultPort || f.LC[0].MsgSize != DefaultMsgSize {
		t.Errorf("lc = %+v", f.LC)
	}
	if f.TimelineRate != 200 || f.TimelineSpan != 1500*time.Millisecond {
		t.Errorf("timeline %d Hz over %v", f.TimelineRate, f.TimelineSpan)
	}
	if len(f.Host.VMs) != 2 || f.Host.VMs[0].Class != spec.ClassLC || f.Host.Sched.Period != time.Millisecond {
		t.Errorf("up-file part: %+v", f.Host)
	}
	if a := f.Addr("server", "sw0"); a != "10.77.0.10" {
		t.Errorf("server address %s", a)
	}
	if a := f.Addr(ClientHost, "sw0"); a != "10.77.0.1" {
		t.Errorf("host address %s", a)
	}
}

// JSON is YAML: the same experiment as one JSON object.
func TestParseJSON(t *testing.T) {
	j := `{"sched": {"cores": [1]}, "switches": [{"name": "sw0", "uplinks": [{"tap": "t0"}]}],
	"vms": [{"name": "s", "class": "lc", "nics": [{}]}, {"name": "b"}],
	"experiment": {"policies": ["linux", "central"], "lc": [{"server": "s"}], "batch": [{"vm": "b"}]}}`
	f, err := Parse([]byte(j), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Phases(), ","); got != "isolated,linux,central" {
		t.Errorf("phases %s", got)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, edit, want string
		line             int
	}{
		{"unknown experiment key", "  repeats: 2\n", "  repeat: 2\n", 9},
		{"bad duration", "  warmup: 1s\n", "  warmup: soon\n", 10},
		{"unknown policy", "    - linux\n", "    - cfs\n", 13},
		{"empty sweep", "threshold: [500us, 1ms]", "threshold: []", 14},
		{"label on a sweep", "grace: 20us}", "grace: 20us, label: x}", 14},
		{"no such server", "server: server, mps", "server: nobody, mps", 0},
		{"batch and lc on one VM", "vm: batch, args", "vm: server, args", 0},
		{"unsafe stress-ng args", `"--cpu 1"`, `"--cpu 1; reboot"`, 19},
		{"colibri.run of its own", "class: batch}", "class: batch, append: 'colibri.run=x'}", 0},
		// An error in the up-file part keeps its line.
		{"up-file error", "name: batch, class: batch", "name: batch, class: bulk", 7},
		{"host client without a TAP", "uplinks: [{tap: colexp0}]", "uplinks: []", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := strings.Replace(goodFile, tc.edit, tc.want, 1)
			if data == goodFile {
				t.Fatalf("edit %q not found", tc.edit)
			}
			_, err := Parse([]byte(data), "")
			var se *spec.Error
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a *spec.Error", err)
			}
			if tc.line != 0 && se.Line != tc.line {
				t.Errorf("%v: line %d, want %d", err, se.Line, tc.line)
			}
		})
	}
	if _, err := Parse([]byte("vms: [{name: a}]\n"), ""); err == nil || !strings.Contains(err.Error(), "no experiment section") {
		t.Errorf("a plain up file: %v", err)
	}
}

func TestIsolatedNone(t *testing.T) {
	f, err := Parse([]byte(strings.Replace(goodFile, "  repeats: 2\n", "  repeats: 2\n  isolated: none\n", 1)), "")
	if err != nil {
		t.Fatal(err)
	}
	if f.Isolated != nil || f.Phases()[0] != "linux" {
		t.Errorf("isolated: none gave %+v, phases %v", f.Isolated, f.Phases())
	}
}

func TestAgentScript(t *testing.T) {
	s := agentScript([]string{"10.77.0.10", ""})
	if strings.ContainsAny(s, "\"\n") {
		t.Errorf("the script holds a double quote or a newline: %s", s)
	}
	if !strings.Contains(s, "ip addr add 10.77.0.10/24 dev eth0") || strings.Contains(s, "eth1") {
		t.Errorf("network setup: %s", s)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(goodFile))
	f.Add([]byte(`{"experiment": {"policies": [{"policy": "central", "threshold": ["1ms", "2ms"]}]}, "vms": [{"name": "a"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ef, err := Parse(data, "")
		if err == nil && (len(ef.Policies) == 0 || len(ef.LC) == 0) {
			t.Errorf("a parsed experiment without policies or LC work")
		}
	})
}

// A sweep that would make millions of phases is refused before it is
// expanded.
func TestSweepBounded(t *testing.T) {
	var vals []string
	for i := 1; i <= 200; i++ {
		vals = append(vals, fmt.Sprintf("%dus", i))
	}
	l := "[" + strings.Join(vals, ", ") + "]"
	data := strings.Replace(goodFile, "threshold: [500us, 1ms], grace: 20us", "threshold: "+l+", quantum: "+l+", grace: "+l, 1)
	// Expanded, 200³ phases would take the test's whole time.
	if _, err := Parse([]byte(data), ""); err == nil || !strings.Contains(err.Error(), "phases") {
		t.Errorf("err = %v", err)
	}
}

func TestExampleParses(t *testing.T) {
	f, err := Load("../examples/experiments/lc-batch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Phases()) < 4 || f.Repeats < 3 {
		t.Errorf("phases %v, %d repeats", f.Phases(), f.Repeats)
	}
}
