// Package promtext writes metrics in the Prometheus text exposition format
// (version 0.0.4): families of counters and gauges, each sample with its
// label values. It is what a scrape of the agent's /metrics returns, with
// none of a metrics library's registries, collectors or package-level
// state: a Family is filled at scrape time and written out.
package promtext

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// ContentType is the media type of the format Write produces.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Type is a metric family's type.
type Type string

// The family types colibri exports.
const (
	Counter Type = "counter"
	Gauge   Type = "gauge"
)

// Family is one metric name with its help text, type, label names and the
// samples added to it.
type Family struct {
	name    string
	help    string
	typ     Type
	labels  []string
	samples []sample
}

type sample struct {
	value  float64
	labels []string
}

// NewFamily returns an empty family. name and the label names must be
// valid Prometheus names; NewFamily panics otherwise (they are constants
// of the program, not input).
func NewFamily(name, help string, typ Type, labels ...string) *Family {
	if !validName(name, true) {
		panic(fmt.Sprintf("promtext: invalid metric name %q", name))
	}
	for _, l := range labels {
		if !validName(l, false) || strings.HasPrefix(l, "__") {
			panic(fmt.Sprintf("promtext: invalid label name %q in %s", l, name))
		}
	}
	return &Family{name: name, help: help, typ: typ, labels: labels}
}

// Name returns the family's metric name.
func (f *Family) Name() string { return f.name }

// Add appends a sample with one value for each of the family's label
// names, in their order. It panics when the count differs.
func (f *Family) Add(v float64, values ...string) {
	if len(values) != len(f.labels) {
		panic(fmt.Sprintf("promtext: %s takes %d label values, got %d", f.name, len(f.labels), len(values)))
	}
	f.samples = append(f.samples, sample{value: v, labels: values})
}

// Reset drops the family's samples, keeping their storage.
func (f *Family) Reset() { f.samples = f.samples[:0] }

// Write writes the families that have samples, in the order given, and
// returns the first write error.
func Write(w io.Writer, fams ...*Family) error {
	bw := bufio.NewWriter(w)
	for _, f := range fams {
		if len(f.samples) == 0 {
			continue
		}
		bw.WriteString("# HELP ")
		bw.WriteString(f.name)
		bw.WriteByte(' ')
		bw.WriteString(escapeHelp(f.help))
		bw.WriteString("\n# TYPE ")
		bw.WriteString(f.name)
		bw.WriteByte(' ')
		bw.WriteString(string(f.typ))
		bw.WriteByte('\n')
		for _, s := range f.samples {
			bw.WriteString(f.name)
			if len(f.labels) > 0 {
				bw.WriteByte('{')
				for i, l := range f.labels {
					if i > 0 {
						bw.WriteByte(',')
					}
					bw.WriteString(l)
					bw.WriteString(`="`)
					bw.WriteString(escapeLabel(s.labels[i]))
					bw.WriteByte('"')
				}
				bw.WriteByte('}')
			}
			bw.WriteByte(' ')
			bw.WriteString(FormatValue(s.value))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

// FormatValue formats a sample value: integers below 2^53 in full (a
// counter of 12345678 reads as such, not as 1.2345678e+07), other values
// in Go's shortest representation, and the special values as the format
// spells them.
func FormatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case v == math.Trunc(v) && math.Abs(v) < 1<<53:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

// validName reports whether s is a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)
// or, without colons, a label name.
func validName(s string, colons bool) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		ok := c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || (colons && c == ':') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}
