package bench

import (
	"fmt"
	"io"
	"math"
	"os"
	"strings"
)

// plot geometry, in SVG user units.
const (
	plotW, plotH     = 720, 420
	marginL, marginR = 70, 150
	marginT, marginB = 40, 50
	innerW           = plotW - marginL - marginR
	innerH           = plotH - marginT - marginB
)

var plotColors = []string{"#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"}

// WriteSVG writes the LC request latency CDF of every policy (and the
// isolated run) as an SVG plot: latency on a log axis, the fraction of
// requests at most that latency on the other.
func (r *Result) WriteSVG(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	if err := r.writeSVG(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: plot: %w", err)
	}
	return f.Close()
}

type series struct {
	name string
	pts  []CDFPoint
}

func (r *Result) writeSVG(w io.Writer) error {
	var ss []series
	if r.Isolated != nil && len(r.Isolated.CDF) > 0 {
		ss = append(ss, series{"isolated", r.Isolated.CDF})
	}
	for _, p := range r.Policies {
		if len(p.CDF) > 0 {
			ss = append(ss, series{p.Policy, p.CDF})
		}
	}
	if len(ss) == 0 {
		return fmt.Errorf("no latency samples to plot")
	}
	lo, hi := math.Inf(1), 0.0
	for _, s := range ss {
		for _, p := range s.pts {
			v := math.Max(p.US, 0.1)
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	x := func(us float64) float64 {
		return marginL + innerW*(math.Log10(math.Max(us, 0.1))-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))
	}
	y := func(q float64) float64 { return marginT + innerH*(1-q) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", plotW, plotH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotW, plotH)
	cores := "cores"
	if len(r.Config.Cores) == 1 {
		cores = "core"
	}
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14">LC request latency CDF (%d LC, %d batch vCPUs on %d %s, %gs per policy)</text>`+"\n",
		marginL, r.Config.LC, r.Config.Batch, len(r.Config.Cores), cores, r.Config.DurationS)
	// Axes and grid: decades on x, tenths on y.
	for d := lo; d <= hi*1.0001; d *= 10 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(d), marginT, x(d), marginT+innerH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%g</text>`+"\n", x(d), marginT+innerH+16, d)
	}
	for q := 0.0; q <= 1.0001; q += 0.1 {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`+"\n", marginL, y(q), marginL+innerW, y(q))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.1f</text>`+"\n", marginL-6, y(q)+4, q)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="black"/>`+"\n", marginL, marginT, innerW, innerH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">request latency (µs, log scale)</text>`+"\n", marginL+innerW/2, plotH-12)
	fmt.Fprintf(&b, `<text x="18" y="%d" transform="rotate(-90 18 %d)" text-anchor="middle">fraction of requests</text>`+"\n", marginT+innerH/2, marginT+innerH/2)
	for i, s := range ss {
		c := plotColors[i%len(plotColors)]
		var pts []string
		for _, p := range s.pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.US), y(p.Q)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		ly := marginT + 10 + 20*i
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", marginL+innerW+12, ly, marginL+innerW+32, ly, c)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", marginL+innerW+38, ly+4, s.name)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
