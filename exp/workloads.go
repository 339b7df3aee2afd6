package exp

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Guest commands. Their results come back as "colibri-exp: ID WORD ..."
// lines (see guest.go); @ID@ is replaced by the command's id.

// serverCmd starts sockperf's server in the background and returns once
// its socket is bound (status 0), or after 60 s (status 1).
func serverCmd(l LC, ip string) string {
	proto, table := "", "/proc/net/udp"
	if l.TCP {
		proto, table = " --tcp", "/proc/net/tcp"
	}
	port := fmt.Sprintf(":%04X ", l.Port)
	return fmt.Sprintf("sockperf server -i %s -p %d%s >/dev/null 2>&1 & i=0; "+
		"while ! grep -q '%s' %s && [ $i -lt 600 ]; do usleep 100000; i=$((i+1)); done; grep -q '%s' %s",
		ip, l.Port, proto, port, table, port, table)
}

// snapCmd prints the guest's counters: UDP InDatagrams, InErrors,
// OutDatagrams, RcvbufErrors (/proc/net/snmp) and the aggregate cpu line
// of /proc/stat (USER_HZ ticks; the eighth value is steal time).
const snapCmd = "echo " + marker + "@ID@ snap $(awk '/^Udp:/ {n++; if (n == 2) print $2, $4, $5, $6}' /proc/net/snmp) $(head -n 1 /proc/stat)"

// guestSnap is what snapCmd reports.
type guestSnap struct {
	ok                             bool
	udpIn, udpInErr, udpOut, rcvEr uint64
	// stat is /proc/stat's cpu line: user nice system idle iowait irq
	// softirq steal ..., in USER_HZ ticks.
	stat []uint64
}

// parseSnap reads a snap line ("snap 1 0 1 0 cpu 1 2 3 ...").
func parseSnap(lines []string) guestSnap {
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 14 || f[0] != "snap" || f[5] != "cpu" {
			continue
		}
		var s guestSnap
		vals := make([]uint64, 0, len(f))
		bad := false
		for _, x := range slices.Concat(f[1:5], f[6:]) {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				bad = true
				break
			}
			vals = append(vals, v)
		}
		if bad {
			continue
		}
		s.udpIn, s.udpInErr, s.udpOut, s.rcvEr = vals[0], vals[1], vals[2], vals[3]
		s.stat = vals[4:]
		s.ok = true
		return s
	}
	return guestSnap{}
}

// userHZ is the guest's /proc/stat tick (Linux on x86: 100).
const userHZ = 100

// steal returns the steal seconds between two snaps.
func steal(a, b guestSnap) float64 {
	if !a.ok || !b.ok || len(a.stat) < 8 || len(b.stat) < 8 || b.stat[7] < a.stat[7] {
		return math.NaN()
	}
	return float64(b.stat[7]-a.stat[7]) / userHZ
}

// batchCmd runs stress-ng for secs seconds and reports its metrics lines
// ("sng STRESSOR OPS REAL USR SYS RATE RATE").
func batchCmd(b Batch, secs int) string {
	return fmt.Sprintf("stress-ng %s --timeout %d --metrics-brief 2>&1 | sed -n 's/^stress-ng: metrc: *\\[[0-9]*\\] */%s@ID@ sng /p'",
		b.Args, secs, marker)
}

// BatchResult is what one stress-ng run reported.
type BatchResult struct {
	VM string `json:"vm"`
	// Stressors are its stressors' lines.
	Stressors []Stressor `json:"stressors"`
	// OpsPerSec sums the stressors' bogo ops per second of real time: the
	// batch throughput.
	OpsPerSec float64 `json:"ops_per_sec"`
	// Error says why there is no figure.
	Error string `json:"error,omitempty"`
}

// Stressor is one stress-ng stressor's metrics.
type Stressor struct {
	Name      string  `json:"name"`
	BogoOps   float64 `json:"bogo_ops"`
	RealS     float64 `json:"real_s"`
	UsrS      float64 `json:"usr_s"`
	SysS      float64 `json:"sys_s"`
	OpsPerSec float64 `json:"ops_per_sec"`
}

// parseBatch reads stress-ng's --metrics-brief lines.
func parseBatch(vm string, lines []string) BatchResult {
	r := BatchResult{VM: vm}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 8 || f[0] != "sng" {
			continue
		}
		var v [6]float64
		ok := true
		for i := range v {
			x, err := strconv.ParseFloat(f[2+i], 64)
			if err != nil || x < 0 || math.IsInf(x, 0) || math.IsNaN(x) {
				ok = false
				break
			}
			v[i] = x
		}
		if !ok {
			continue
		}
		r.Stressors = append(r.Stressors, Stressor{Name: f[1], BogoOps: v[0], RealS: v[1], UsrS: v[2], SysS: v[3], OpsPerSec: v[4]})
		r.OpsPerSec += v[4]
	}
	if len(r.Stressors) == 0 {
		r.Error = "stress-ng reported no metrics"
	}
	return r
}

// clientArgs are sockperf under-load's arguments against server ip for
// secs seconds; fullLog, if set, is its per-message log.
func clientArgs(l LC, ip string, secs int, fullLog string) []string {
	a := []string{"under-load", "-i", ip, "-p", strconv.Itoa(l.Port), "--mps", strconv.Itoa(l.MPS),
		"-m", strconv.Itoa(l.MsgSize), "-t", strconv.Itoa(secs), "--reply-every", "1", "--full-rtt"}
	if l.TCP {
		a = append(a, "--tcp")
	}
	if fullLog != "" {
		a = append(a, "--full-log", fullLog)
	}
	return a
}

// clientCmd runs the client in a guest, its summary lines marked "sp".
func clientCmd(l LC, ip string, secs int) string {
	return "sockperf " + strings.Join(clientArgs(l, ip, secs, ""), " ") +
		" 2>&1 | sed -n 's/^sockperf: /" + marker + "@ID@ sp /p'"
}

// ClientSummary is what sockperf's client printed.
type ClientSummary struct {
	// Sent and Received are the whole run's messages ([Total Run]).
	Sent, Received uint64
	// ValidS, ValidSent, ValidReceived are the measured part's ([Valid
	// Duration]: sockperf leaves out its first 400 ms and the end).
	ValidS                   float64
	ValidSent, ValidReceived uint64
	Dropped, Duplicated, OOO uint64
	// Observations is the number of round trips the percentiles cover.
	Observations uint64
	// MeanUS, MinUS, MaxUS and Percentiles (percent → µs) are RTTs.
	MeanUS, MinUS, MaxUS float64
	Percentiles          map[float64]float64
	ok                   bool
}

var (
	ansiRE    = regexp.MustCompile(`\x1b\[[0-9;]*m`)
	totalRE   = regexp.MustCompile(`\[Total Run\] RunTime=[0-9.]+ sec; .*SentMessages=(\d+); ReceivedMessages=(\d+)`)
	validRE   = regexp.MustCompile(`\[Valid Duration\] RunTime=([0-9.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)`)
	avgRE     = regexp.MustCompile(`avg-(?:rtt|latency)=([0-9.]+)`)
	droppedRE = regexp.MustCompile(`# dropped messages = (\d+); # duplicated messages = (\d+); # out-of-order messages = (\d+)`)
	obsRE     = regexp.MustCompile(`Total (\d+) observations`)
	pctRE     = regexp.MustCompile(`---> percentile ([0-9.]+) = +([0-9.]+)`)
	maxRE     = regexp.MustCompile(`---> <MAX> observation = +([0-9.]+)`)
	minRE     = regexp.MustCompile(`---> <MIN> observation = +([0-9.]+)`)
)

// parseClient reads sockperf's client output (with or without its
// "sockperf: " prefixes).
func parseClient(lines []string) ClientSummary {
	s := ClientSummary{Percentiles: map[float64]float64{}}
	u := func(x string) uint64 { v, _ := strconv.ParseUint(x, 10, 64); return v }
	fl := func(x string) float64 { v, _ := strconv.ParseFloat(x, 64); return v }
	for _, l := range lines {
		l = ansiRE.ReplaceAllString(l, "")
		if m := totalRE.FindStringSubmatch(l); m != nil {
			s.Sent, s.Received, s.ok = u(m[1]), u(m[2]), true
		} else if m := validRE.FindStringSubmatch(l); m != nil {
			s.ValidS, s.ValidSent, s.ValidReceived = fl(m[1]), u(m[2]), u(m[3])
		} else if m := avgRE.FindStringSubmatch(l); m != nil {
			s.MeanUS = fl(m[1])
		} else if m := droppedRE.FindStringSubmatch(l); m != nil {
			s.Dropped, s.Duplicated, s.OOO = u(m[1]), u(m[2]), u(m[3])
		} else if m := obsRE.FindStringSubmatch(l); m != nil {
			s.Observations = u(m[1])
		} else if m := pctRE.FindStringSubmatch(l); m != nil {
			s.Percentiles[fl(m[1])] = fl(m[2])
		} else if m := maxRE.FindStringSubmatch(l); m != nil {
			s.MaxUS = fl(m[1])
		} else if m := minRE.FindStringSubmatch(l); m != nil {
			s.MinUS = fl(m[1])
		}
	}
	return s
}

// readFullLog reads the RTTs (µs) of sockperf's --full-log CSV
// ("packet, txTime(sec), rxTime(sec), rtt(usec)" rows), sorted.
func readFullLog(r io.Reader) ([]float64, error) {
	var out []float64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		if len(f) != 4 {
			continue
		}
		if _, err := strconv.ParseUint(strings.TrimSpace(f[0]), 10, 64); err != nil {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(f[3]), 64)
		if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			continue
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Float64s(out)
	return out, nil
}

// CDFPoint is one point of a latency CDF: the fraction Q of round trips
// took at most US microseconds.
type CDFPoint struct {
	US float64 `json:"us"`
	Q  float64 `json:"q"`
}

// quantile returns the q-quantile of sorted (nearest rank).
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// cdfOf reduces sorted samples to at most ~400 CDF points, dense in the
// tail.
func cdfOf(sorted []float64) []CDFPoint {
	n := len(sorted)
	if n == 0 {
		return nil
	}
	var qs []float64
	for q := 0.0; q < 0.9; q += 0.01 {
		qs = append(qs, q)
	}
	for q := 0.9; q < 0.99; q += 0.001 {
		qs = append(qs, q)
	}
	for q := 0.99; q < 1; q += 0.0001 {
		qs = append(qs, q)
	}
	qs = append(qs, 1)
	var out []CDFPoint
	last := -1
	for _, q := range qs {
		i := max(0, min(int(math.Ceil(q*float64(n)))-1, n-1))
		if i == last {
			continue
		}
		last = i
		out = append(out, CDFPoint{US: sorted[i], Q: float64(i+1) / float64(n)})
	}
	return out
}

// cdfFromSummary builds a coarse CDF from sockperf's percentile lines
// (a client in a guest has no full log here).
func cdfFromSummary(s ClientSummary) []CDFPoint {
	var out []CDFPoint
	if s.MinUS > 0 {
		out = append(out, CDFPoint{US: s.MinUS, Q: 0})
	}
	var ps []float64
	for p := range s.Percentiles {
		ps = append(ps, p)
	}
	sort.Float64s(ps)
	for _, p := range ps {
		out = append(out, CDFPoint{US: s.Percentiles[p], Q: p / 100})
	}
	if s.MaxUS > 0 {
		out = append(out, CDFPoint{US: s.MaxUS, Q: 1})
	}
	return out
}
