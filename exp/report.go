package exp

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// WriteReport writes report.md and its plots (cdf-lcN.svg, batch.svg,
// timeline-PHASE.svg) into dir.
func WriteReport(r *Result, dir string) error {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "# Experiment %s\n\n", filepath.Base(r.File))
	where := "this host"
	if r.Host.Sandbox {
		where = "the KVM sandbox (QEMU TCG, nested SVM: absolute times are 30–50× metal's)"
	}
	fmt.Fprintf(&b, "Ran %s – %s on %s: %d CPUs, kernel %s.\n\n", r.Started.UTC().Format("2006-01-02 15:04:05"),
		r.Ended.UTC().Format("15:04:05 UTC"), where, r.Host.CPUs, r.Host.Kernel)
	timers := r.Host.Timers
	if timers == "" {
		timers = "none on its command line (the kernel's defaults)"
	}
	fmt.Fprintf(&b, "Host timer arguments: %s.\n\n", timers)
	fmt.Fprintf(&b, "- Boot: %s; %d repeat(s) of every phase; warm-up %gs (not measured), then %gs measured.\n", c.Boot, c.Repeats, c.WarmupS, c.DurationS)
	fmt.Fprintf(&b, "- Managed cores %v; scheduler thread on %s, mode %s, period %g µs; pollers on %v; host client on CPUs %v.\n",
		c.Cores, cpuName(c.SchedCPU), orDefault(c.Mode, "default"), c.PeriodUS, c.Pollers, c.Client)
	fmt.Fprintf(&b, "- LC: %s. Batch: %s.\n", strings.Join(c.LC, "; "), orDefault(strings.Join(c.Batch, "; "), "none"))
	fmt.Fprintf(&b, "- Phases, in run order: %s.\n\n", strings.Join(c.Phases, ", "))
	if r.Failed {
		b.WriteString("**FAILED MEASUREMENT**: every repeat's isolated run was worse than a colocated one (or had no figure); the tables summarise all repeats and none of their figures is a result.\n\n")
	}
	if len(r.FailedRepeats) > 0 {
		b.WriteString("Repeats left out of the medians (failed measurements):\n\n")
		for rep := 1; rep <= c.Repeats; rep++ {
			if why, ok := r.FailedRepeats[rep]; ok {
				fmt.Fprintf(&b, "- repeat %d: %s\n", rep, why)
			}
		}
		b.WriteString("\n")
	}

	var lcNames []string
	if len(r.Summary) > 0 {
		for _, l := range r.Summary[0].LC {
			lcNames = append(lcNames, l.Workload)
		}
	}
	for i, name := range lcNames {
		fmt.Fprintf(&b, "## LC latency: %s\n\n", name)
		b.WriteString("Round-trip time as the client measured it, median over the kept repeats [min – max].\n\n")
		b.WriteString("| phase | p50 µs | p99 µs | p99.9 µs | p99 / isolated | client sent | replies | server got |\n|---|---|---|---|---|---|---|---|\n")
		for _, ps := range r.Summary {
			if i >= len(ps.LC) {
				continue
			}
			l := ps.LC[i]
			server := "n/a"
			if l.Server >= 0 {
				server = fmt.Sprint(l.Server)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %d | %s |\n", ps.Phase, statStr(l.P50US, 0), statStr(l.P99US, 0),
				statStr(l.P999US, 0), ratio(float64(l.P99VsIsolated)), l.Sent, l.Received, server)
		}
		plot := fmt.Sprintf("cdf-lc%d.svg", i)
		if err := writeFile(dir, plot, cdfSVG(r, i, name)); err != nil {
			return err
		}
		fmt.Fprintf(&b, "\n![latency CDF](%s)\n\n", plot)
	}

	b.WriteString("## Batch throughput\n\nstress-ng's bogo ops per second of real time, summed over the batch workloads.\n\n")
	b.WriteString("| phase | bogo ops/s | vs linux |\n|---|---|---|\n")
	for _, ps := range r.Summary {
		if ps.Phase == IsolatedLabel {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", ps.Phase, statStr(ps.BatchOpsPerSec, 1), ratio(float64(ps.BatchVsLinux)))
	}
	if err := writeFile(dir, "batch.svg", batchSVG(r)); err != nil {
		return err
	}
	b.WriteString("\n![batch throughput](batch.svg)\n\n")

	b.WriteString("## Where the time went\n\nPer phase, medians over the kept repeats: the vCPUs' time waiting on a host runqueue (CPU ready), the LC guests' steal time, the scheduler's cost, and every VM's exits.\n\n")
	b.WriteString("| phase | LC CPU ready s | batch CPU ready s | LC steal s | sched CPU % of a core | passes/s | µs per pass | parks/s | sched migrations/s | VM exits/s |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, ps := range r.Summary {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", ps.Phase, num(ps.LCWaitS.Median, 3), num(ps.BatchWaitS.Median, 3),
			num(ps.LCStealS.Median, 2), num(ps.SchedCPUPct.Median, 1), num(ps.PassesPerSec.Median, 0), num(ps.USPerPass.Median, 1),
			num(ps.ParksPerSec.Median, 1), num(ps.MigrationsPerSec.Median, 1), num(ps.ExitsPerSec.Median, 0))
	}
	b.WriteString("\n### Per vCPU (first kept repeat)\n\n| phase | vCPU | class | run s | CPU ready s | wait p50 µs | wait p99 µs | preemptions | switches | kernel migrations |\n|---|---|---|---|---|---|---|---|---|---|\n")
	first := firstKept(r)
	for _, pr := range r.Runs {
		if pr.Repeat != first {
			continue
		}
		for _, v := range pr.VCPUs {
			mig := "n/a"
			if v.Migrations >= 0 {
				mig = fmt.Sprint(v.Migrations)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %.3f | %.3f | %s | %s | %d | %d | %s |\n", pr.Phase, v.VCPU, v.Class, v.RunS, v.WaitS,
				num(v.WaitP50US, 0), num(v.WaitP99US, 0), v.Preemptions, v.Switches, mig)
		}
	}
	b.WriteString("\n## Per-core timelines (first kept repeat)\n\n")
	for _, pr := range r.Runs {
		if pr.Repeat != first || pr.Timeline == nil || len(pr.Timeline.TS) == 0 {
			continue
		}
		name := "timeline-" + fileSafe(pr.Phase) + ".svg"
		if err := writeFile(dir, name, timelineSVG(pr)); err != nil {
			return err
		}
		fmt.Fprintf(&b, "### %s\n\n![timeline %s](%s)\n\n", pr.Phase, pr.Phase, name)
	}
	b.WriteString("## Every run\n\n| repeat | phase | LC p50 µs | LC p99 µs | sent | server got | batch ops/s | sched CPU % | error |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, pr := range r.Runs {
		p50, p99, sent, srv := math.NaN(), math.NaN(), uint64(0), int64(0)
		if len(pr.LC) > 0 {
			p50, p99, sent, srv = pr.LC[0].P50US, pr.LC[0].P99US, pr.LC[0].Sent, pr.LC[0].ServerReceived
		}
		ops := 0.0
		for _, bt := range pr.Batch {
			ops += bt.OpsPerSec
		}
		var errs []string
		if pr.Error != "" {
			errs = append(errs, pr.Error)
		}
		for _, l := range pr.LC {
			if l.Error != "" {
				errs = append(errs, l.Error)
			}
		}
		for _, bt := range pr.Batch {
			if bt.Error != "" {
				errs = append(errs, bt.VM+": "+bt.Error)
			}
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %d | %d | %.1f | %.1f | %s |\n", pr.Repeat, pr.Phase, num(p50, 0), num(p99, 0), sent, srv, ops,
			pr.Sched.CPUPct, strings.ReplaceAll(strings.Join(errs, "; "), "|", "/"))
	}
	b.WriteString("\n## Notes\n\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	return writeFile(dir, "report.md", b.String())
}

func writeFile(dir, name, s string) error {
	if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

func firstKept(r *Result) int {
	for _, pr := range r.Runs {
		if _, bad := r.FailedRepeats[pr.Repeat]; !bad || r.Failed {
			return pr.Repeat
		}
	}
	return 1
}

func cpuName(c *int) string {
	if c == nil {
		return "no fixed CPU"
	}
	return fmt.Sprintf("CPU %d", *c)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func num(x float64, prec int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, x)
}

func ratio(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", x)
}

func statStr(s Stat, prec int) string {
	if s.N == 0 {
		return "n/a"
	}
	if s.N == 1 {
		return num(s.Median, prec)
	}
	return fmt.Sprintf("%s [%s – %s]", num(s.Median, prec), num(s.Min, prec), num(s.Max, prec))
}

// SVG plots, hand-written: a CDF of latency on a log axis, a bar chart,
// and per-core timelines.

const (
	svgW, svgH = 900, 420
	padL, padR = 120, 280
	padT, padB = 40, 50
	// nines is the CDF's deepest tail level: 1 - 10^-nines.
	nines = 4.0
)

var palette = []string{"#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666", "#1f78b4", "#b2df8a"}

func svgStart(b *strings.Builder, w, h int, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(b, `<text x="%d" y="22" font-size="14">%s</text>`+"\n", padL, xmlEscape(title))
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

func cdfSVG(r *Result, lc int, name string) string {
	type series struct {
		name string
		pts  []CDFPoint
	}
	var ss []series
	lo, hi := math.Inf(1), 0.0
	for _, ps := range r.Summary {
		if lc < len(ps.LC) && len(ps.LC[lc].CDF) > 0 {
			ss = append(ss, series{ps.Phase, ps.LC[lc].CDF})
			for _, p := range ps.LC[lc].CDF {
				v := math.Max(p.US, 1)
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	var b strings.Builder
	svgStart(&b, svgW, svgH, "LC round-trip time CDF: "+name)
	if len(ss) == 0 {
		b.WriteString(`<text x="200" y="200">no latency samples</text></svg>` + "\n")
		return b.String()
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	iw, ih := float64(svgW-padL-padR), float64(svgH-padT-padB)
	x := func(v float64) float64 {
		return padL + iw*(math.Log10(math.Max(v, lo))-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))
	}
	// A "nines" axis: 0, 0.9, 0.99, 0.999 equally spaced, so the tail
	// shows.
	y := func(q float64) float64 {
		t := nines
		if q < 1 {
			t = math.Min(-math.Log10(1-q), nines)
		}
		return padT + ih*(1-t/nines)
	}
	for d := lo; d <= hi*1.0001; d *= 10 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n",
			x(d), padT, x(d), svgH-padB, x(d), svgH-padB+16, usLabel(d))
	}
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 0.9999} {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n",
			padL, y(q), svgW-padR, y(q), padL-6, y(q)+4, q)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">round-trip time (log scale)</text>`+"\n", padL+iw/2, svgH-12)
	fmt.Fprintf(&b, `<text x="16" y="%.1f" transform="rotate(-90 16 %.1f)" text-anchor="middle">fraction of requests (nines)</text>`+"\n", padT+ih/2, padT+ih/2)
	for i, s := range ss {
		col := palette[i%len(palette)]
		var pts []string
		prevQ := 0.0
		for j, p := range s.pts {
			if j == 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.US), y(0)))
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f %.1f,%.1f", x(p.US), y(prevQ), x(p.US), y(p.Q)))
			prevQ = p.Q
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`+"\n", col, strings.Join(pts, " "))
		ly := padT + 10 + 18*i
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/><text x="%d" y="%d">%s</text>`+"\n",
			svgW-padR+12, ly, svgW-padR+32, ly, col, svgW-padR+38, ly+4, xmlEscape(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func usLabel(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gs", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%gms", v/1e3)
	}
	return fmt.Sprintf("%gµs", v)
}

func batchSVG(r *Result) string {
	var rows []*PhaseSummary
	top := 0.0
	for _, ps := range r.Summary {
		if ps.Phase != IsolatedLabel && ps.BatchOpsPerSec.N > 0 {
			rows = append(rows, ps)
			top = math.Max(top, ps.BatchOpsPerSec.Max)
		}
	}
	const left, right = 300, 60
	h := padT + padB + 30*max(len(rows), 1)
	var b strings.Builder
	svgStart(&b, svgW, h, "Batch throughput per phase (stress-ng bogo ops/s of real time: median, line min–max)")
	if len(rows) == 0 || top <= 0 {
		b.WriteString(`<text x="200" y="70">no batch figures</text></svg>` + "\n")
		return b.String()
	}
	iw := float64(svgW - left - right)
	x := func(v float64) float64 { return left + iw*v/(top*1.1) }
	for k := 0; k <= 4; k++ {
		v := top * 1.1 * float64(k) / 4
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%.0f</text>`+"\n",
			x(v), padT, x(v), h-padB, x(v), h-padB+16, v)
	}
	for i, ps := range rows {
		st := ps.BatchOpsPerSec
		y0 := float64(padT + 30*i + 5)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y0+14, xmlEscape(ps.Phase))
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%.1f" height="20" fill="%s"/>`+"\n", left, y0, x(st.Median)-left, palette[i%len(palette)])
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black" stroke-width="1.5"/>`+"\n", x(st.Min), y0+10, x(st.Max), y0+10)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// timelineSVG draws, per managed core, which vCPU the samples found
// running there, and under it, per vCPU, when it waited runnable.
func timelineSVG(pr *PhaseResult) string {
	tl := pr.Timeline
	rows := len(tl.Cores) + len(tl.VCPUs)
	h := padT + padB + 26*rows
	var b strings.Builder
	svgStart(&b, svgW, h, fmt.Sprintf("%s, repeat %d: which vCPU ran where (sampled at %d Hz)", pr.Phase, pr.Repeat, tl.RateHz))
	end := func(i int) float64 {
		if i+1 < len(tl.TS) {
			return tl.TS[i+1]
		}
		return tl.TS[i] + 1/float64(max(tl.RateHz, 1))
	}
	span := end(len(tl.TS) - 1)
	iw := float64(svgW - padL - padR)
	x := func(t float64) float64 { return padL + iw*t/span }
	row := func(k int) float64 { return float64(padT + 26*k) }
	for k, c := range tl.Cores {
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">CPU %d</text>`+"\n", padL-6, row(k)+15, c)
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%.1f" height="20" fill="#f4f4f4"/>`+"\n", padL, row(k), iw)
		// Runs of samples with the same vCPU on this core.
		cur, from := -1, 0.0
		flush := func(to float64) {
			if cur >= 0 {
				fmt.Fprintf(&b, `<rect x="%.2f" y="%.1f" width="%.2f" height="20" fill="%s"/>`+"\n", x(from), row(k), math.Max(x(to)-x(from), 0.5), palette[cur%len(palette)])
			}
		}
		for i := range tl.TS {
			who := -1
			for j, cpu := range tl.CPU[i] {
				if int(cpu) == c {
					who = j
				}
			}
			if who != cur {
				flush(tl.TS[i])
				cur, from = who, tl.TS[i]
			}
		}
		flush(end(len(tl.TS) - 1))
	}
	for j, name := range tl.VCPUs {
		k := len(tl.Cores) + j
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="%s">%s waits</text>`+"\n", padL-6, row(k)+15, palette[j%len(palette)], xmlEscape(name))
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%.1f" height="20" fill="#f4f4f4"/>`+"\n", padL, row(k), iw)
		for i := 0; i < len(tl.TS); i++ {
			if tl.CPU[i][j] != -1 {
				continue
			}
			from := tl.TS[i]
			for i+1 < len(tl.TS) && tl.CPU[i+1][j] == -1 {
				i++
			}
			fmt.Fprintf(&b, `<rect x="%.2f" y="%.1f" width="%.2f" height="20" fill="#c0392b"/>`+"\n", x(from), row(k), math.Max(x(end(i))-x(from), 0.5))
		}
		ly := padT + 10 + 18*j
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="20" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			svgW-padR+12, ly-5, palette[j%len(palette)], svgW-padR+38, ly+4, xmlEscape(name))
	}
	ly := padT + 10 + 18*len(tl.VCPUs)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="20" height="10" fill="#c0392b"/><text x="%d" y="%d">runnable, waiting</text>`+"\n", svgW-padR+12, ly-5, svgW-padR+38, ly+4)
	for _, t := range []float64{0, span / 2, span} {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.0f ms</text>`+"\n", x(t), h-padB+16, t*1e3)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
