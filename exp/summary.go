package exp

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/colibrivm/colibri/host/spec"
)

// summarize flags the failed repeats and fills res.Summary.
//
// A repeat is a failed measurement when its isolated run (the best case:
// the same cores, scheduler thread and placement, no batch work) has a
// worse LC p99 than a colocated phase of the same repeat, or when the
// isolated run has no figure: such a repeat says more about the machine
// than about the policies, and is left out of the medians. With no repeat
// left, every repeat is summarised and the result is marked failed.
func summarize(f *File, res *Result) {
	res.FailedRepeats = map[int]string{}
	byRep := map[int][]*PhaseResult{}
	var reps []int
	for _, pr := range res.Runs {
		if _, ok := byRep[pr.Repeat]; !ok {
			reps = append(reps, pr.Repeat)
		}
		byRep[pr.Repeat] = append(byRep[pr.Repeat], pr)
	}
	if f.Isolated != nil {
		for _, rep := range reps {
			if why := isolatedFailure(byRep[rep]); why != "" {
				res.FailedRepeats[rep] = why
			}
		}
	}
	var kept []int
	for _, rep := range reps {
		if _, bad := res.FailedRepeats[rep]; !bad {
			kept = append(kept, rep)
		}
	}
	if len(kept) == 0 {
		res.Failed = true
		kept = reps
	}
	var iso, linux *PhaseSummary
	for _, label := range f.Phases() {
		var runs []*PhaseResult
		for _, rep := range kept {
			for _, pr := range byRep[rep] {
				if pr.Phase == label {
					runs = append(runs, pr)
				}
			}
		}
		ps := summarizePhase(label, f, runs)
		res.Summary = append(res.Summary, ps)
		if label == IsolatedLabel {
			iso = ps
		}
		if linux == nil && slices.ContainsFunc(f.Policies, func(p Policy) bool { return p.Label == label && p.Spec.Name == spec.PolicyLinux }) {
			linux = ps
		}
	}
	for _, ps := range res.Summary {
		ps.BatchVsLinux = Num(math.NaN())
		if linux != nil && linux.BatchOpsPerSec.Median > 0 {
			ps.BatchVsLinux = Num(ps.BatchOpsPerSec.Median / linux.BatchOpsPerSec.Median)
		}
		for i, l := range ps.LC {
			l.P99VsIsolated = Num(math.NaN())
			if iso != nil && i < len(iso.LC) && iso.LC[i].P99US.Median > 0 {
				l.P99VsIsolated = Num(l.P99US.Median / iso.LC[i].P99US.Median)
			}
		}
	}
}

// isolatedFailure says why a repeat's isolated run fails it, or "".
func isolatedFailure(runs []*PhaseResult) string {
	var iso *PhaseResult
	for _, pr := range runs {
		if pr.Isolated {
			iso = pr
		}
	}
	if iso == nil {
		return "" // the run ended before its isolated phase
	}
	if iso.Error != "" {
		return "the isolated run failed: " + iso.Error
	}
	for _, pr := range runs {
		if pr.Isolated {
			continue
		}
		for i, l := range pr.LC {
			if i >= len(iso.LC) || l.Error != "" || l.P99US <= 0 {
				continue
			}
			il := iso.LC[i]
			if il.Error != "" || il.P99US <= 0 {
				return fmt.Sprintf("the isolated run has no p99 for %s: %s", il.Workload, il.Error)
			}
			if il.P99US > l.P99US {
				return fmt.Sprintf("isolated p99 %.0f µs is worse than %s's %.0f µs (%s): a failed measurement, not a win",
					il.P99US, pr.Phase, l.P99US, l.Workload)
			}
		}
	}
	return ""
}

func summarizePhase(label string, f *File, runs []*PhaseResult) *PhaseSummary {
	ps := &PhaseSummary{Phase: label}
	for _, pr := range runs {
		ps.Repeats = append(ps.Repeats, pr.Repeat)
	}
	lcServer := map[string]bool{}
	for i, l := range f.LC {
		lcServer[l.Server] = true
		ls := &LCSummary{Workload: l.Name()}
		var p50, p99, p999 []float64
		var pooled []float64
		var coarse []CDFPoint
		for _, pr := range runs {
			if i >= len(pr.LC) {
				continue
			}
			lr := pr.LC[i]
			ls.Sent += lr.Sent
			ls.Received += lr.Received
			if lr.ServerReceived >= 0 {
				ls.Server += lr.ServerReceived
			} else {
				ls.Server = -1
			}
			if lr.Error != "" || lr.Observations == 0 && len(lr.rtts) == 0 {
				continue
			}
			p50, p99, p999 = append(p50, lr.P50US), append(p99, lr.P99US), append(p999, lr.P999US)
			pooled = append(pooled, lr.rtts...)
			if coarse == nil {
				coarse = lr.CDF
			}
		}
		ls.P50US, ls.P99US, ls.P999US = statOf(p50), statOf(p99), statOf(p999)
		if len(pooled) > 0 {
			sort.Float64s(pooled)
			ls.CDF = cdfOf(pooled)
		} else {
			ls.CDF = coarse
		}
		ps.LC = append(ps.LC, ls)
	}
	var batch, cpu, passes, perPass, parks, migr, lcWait, bWait, steal, exits []float64
	for _, pr := range runs {
		el := pr.MeasureS
		if el <= 0 {
			continue
		}
		if !pr.Isolated && len(f.Batch) > 0 {
			sum := 0.0
			for _, b := range pr.Batch {
				if b.Error != "" {
					sum = math.NaN()
					break
				}
				sum += b.OpsPerSec
			}
			if len(pr.Batch) == 0 {
				sum = math.NaN()
			}
			batch = append(batch, sum)
		}
		cpu = append(cpu, pr.Sched.CPUPct)
		passes = append(passes, float64(pr.Sched.Passes)/el)
		if pr.Sched.Passes > 0 {
			perPass = append(perPass, 1e6*pr.Sched.PassS/float64(pr.Sched.Passes))
		}
		parks = append(parks, float64(pr.Sched.Parks)/el)
		migr = append(migr, float64(pr.Sched.Migrations)/el)
		var lw, bw float64
		for _, v := range pr.VCPUs {
			if v.Class == spec.ClassLC {
				lw += v.WaitS
			} else {
				bw += v.WaitS
			}
		}
		lcWait, bWait = append(lcWait, lw), append(bWait, bw)
		st, ex := 0.0, 0.0
		for _, v := range pr.VMs {
			ex += float64(v.Exits)
			if lcServer[v.Name] {
				if v.StealS == nil {
					st = math.NaN()
				} else {
					st += *v.StealS
				}
			}
		}
		steal, exits = append(steal, st), append(exits, ex/el)
	}
	ps.BatchOpsPerSec, ps.SchedCPUPct, ps.PassesPerSec, ps.USPerPass = statOf(batch), statOf(cpu), statOf(passes), statOf(perPass)
	ps.ParksPerSec, ps.MigrationsPerSec = statOf(parks), statOf(migr)
	ps.LCWaitS, ps.BatchWaitS, ps.LCStealS, ps.ExitsPerSec = statOf(lcWait), statOf(bWait), statOf(steal), statOf(exits)
	return ps
}
