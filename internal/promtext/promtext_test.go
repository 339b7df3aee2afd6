package promtext

import (
	"math"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestWriteParsesWithPrometheusParser(t *testing.T) {
	vms := NewFamily("colibri_vm_state", "1 for the state, \\ and\nnewline.", Gauge, "vm", "state")
	vms.Add(1, `we"ird\name`+"\n", "running")
	vms.Add(0, "b", "paused")
	exits := NewFamily("colibri_exits_total", "Exits.", Counter, "vm")
	exits.Add(12345678901, "a")
	empty := NewFamily("colibri_never_total", "No samples.", Counter)
	plain := NewFamily("colibri_passes_total", "Passes.", Counter)
	plain.Add(0.25)

	var b strings.Builder
	if err := Write(&b, vms, exits, empty, plain); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("does not parse: %v\n%s", err, text)
	}
	if len(fams) != 3 || fams["colibri_never_total"] != nil {
		t.Fatalf("families %v (the empty one must be left out)\n%s", fams, text)
	}
	f := fams["colibri_vm_state"]
	if f.GetHelp() != "1 for the state, \\ and\nnewline." || f.GetType().String() != "GAUGE" || len(f.Metric) != 2 {
		t.Fatalf("vm_state: %v", f)
	}
	if got := f.Metric[0].Label[0].GetValue(); got != `we"ird\name`+"\n" {
		t.Errorf("label value came back as %q", got)
	}
	if got := f.Metric[0].GetGauge().GetValue(); got != 1 {
		t.Errorf("gauge %v", got)
	}
	if got := fams["colibri_exits_total"].Metric[0].GetCounter().GetValue(); got != 12345678901 {
		t.Errorf("counter %v", got)
	}
	if !strings.Contains(text, "colibri_exits_total{vm=\"a\"} 12345678901\n") {
		t.Errorf("integer counter not written in full:\n%s", text)
	}
	if got := fams["colibri_passes_total"].Metric[0].GetCounter().GetValue(); got != 0.25 {
		t.Errorf("unlabelled counter %v", got)
	}
}

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {1, "1"}, {-3, "-3"}, {1 << 52, "4503599627370496"}, {1 << 60, "1.152921504606847e+18"},
		{0.5, "0.5"}, {1e-9, "1e-09"}, {math.NaN(), "NaN"}, {math.Inf(1), "+Inf"}, {math.Inf(-1), "-Inf"},
	} {
		if got := FormatValue(tc.v); got != tc.want {
			t.Errorf("FormatValue(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestReset(t *testing.T) {
	f := NewFamily("x_total", "X.", Counter)
	f.Add(1)
	f.Reset()
	var b strings.Builder
	if err := Write(&b, f); err != nil || b.Len() != 0 {
		t.Fatalf("after Reset wrote %q, %v", b.String(), err)
	}
}

func TestInvalidNamesPanic(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels []string
	}{
		{"", nil}, {"9lives", nil}, {"a-b", nil}, {"ok", []string{"a:b"}}, {"ok", []string{"__reserved"}}, {"ok", []string{""}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewFamily(%q, %q) did not panic", tc.name, tc.labels)
				}
			}()
			NewFamily(tc.name, "", Gauge, tc.labels...)
		}()
	}
	f := NewFamily("ok:name_total", "", Counter, "vm")
	defer func() {
		if recover() == nil {
			t.Error("Add with the wrong number of label values did not panic")
		}
	}()
	f.Add(1)
}
