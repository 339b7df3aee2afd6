package bench

import (
	"encoding/xml"
	"strings"
	"testing"
)

func TestWriteSVG(t *testing.T) {
	r := &Result{
		Isolated: &Summary{Policy: "isolated", CDF: []CDFPoint{{0.5, 20}, {0.99, 150}, {1, 300}}},
		Policies: []Summary{
			{Policy: "linux", CDF: []CDFPoint{{0.5, 25}, {0.99, 7800}, {1, 12000}}},
			{Policy: "central", CDF: []CDFPoint{{0.5, 21}, {0.99, 140}, {1, 400}}},
		},
		Config: ConfigJSON{LC: 1, Batch: 2, Cores: []int{1}, DurationS: 3},
	}
	var b strings.Builder
	if err := r.writeSVG(&b); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
		t.Fatalf("not well-formed XML: %v", err)
	}
	if n := strings.Count(svg, "<polyline"); n != 3 {
		t.Errorf("%d curves, want 3 (isolated, linux, central)", n)
	}
	for _, want := range []string{">linux<", ">central<", ">isolated<", ">10000<"} {
		if !strings.Contains(svg, want) {
			t.Errorf("plot lacks %q", want)
		}
	}
	if err := (&Result{}).writeSVG(&b); err == nil {
		t.Error("plotted a result with no samples")
	}
}
