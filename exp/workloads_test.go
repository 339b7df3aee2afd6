package exp

import (
	"os"
	"strings"
	"testing"
)

// testdata/sockperf-client.txt is Debian's sockperf 3.7 under-load client
// (--full-rtt) against its server on loopback; fulllog.csv a cut of its
// --full-log; stress-ng.txt stress-ng 0.15.06 --cpu 1 --metrics-brief.

func TestParseClient(t *testing.T) {
	b, err := os.ReadFile("testdata/sockperf-client.txt")
	if err != nil {
		t.Fatal(err)
	}
	s := parseClient(strings.Split(string(b), "\n"))
	if !s.ok || s.Sent != 601 || s.Received != 601 {
		t.Errorf("total run: %+v", s)
	}
	if s.ValidSent == 0 || s.ValidSent != s.ValidReceived || s.ValidS <= 0 || s.Observations != s.ValidReceived {
		t.Errorf("valid duration: %+v", s)
	}
	for _, p := range []float64{25, 50, 75, 90, 99, 99.9, 99.99, 99.999} {
		if s.Percentiles[p] <= 0 {
			t.Errorf("percentile %g missing: %v", p, s.Percentiles)
		}
	}
	if !(s.MinUS <= s.Percentiles[50] && s.Percentiles[50] <= s.Percentiles[99] && s.Percentiles[99] <= s.MaxUS) || s.MeanUS <= 0 {
		t.Errorf("min %g p50 %g p99 %g max %g mean %g", s.MinUS, s.Percentiles[50], s.Percentiles[99], s.MaxUS, s.MeanUS)
	}
	assertMonotone(t, cdfFromSummary(s))
	// A guest's lines come without the "sockperf: " prefix, and garbage
	// among them changes nothing.
	var guestLines []string
	for _, l := range strings.Split(string(b), "\n") {
		guestLines = append(guestLines, strings.TrimPrefix(l, "sockperf: "), "SentMessages=banana")
	}
	if g := parseClient(guestLines); g.Sent != s.Sent || g.Percentiles[99] != s.Percentiles[99] {
		t.Errorf("without prefixes: %+v", g)
	}
}

func TestFullLogCDF(t *testing.T) {
	f, err := os.Open("testdata/fulllog.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rtts, err := readFullLog(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(rtts) != 21 {
		t.Fatalf("%d RTTs, want the file's 21 rows", len(rtts))
	}
	c := cdfOf(rtts)
	assertMonotone(t, c)
	if last := c[len(c)-1]; last.Q != 1 || last.US != rtts[len(rtts)-1] {
		t.Errorf("the CDF ends at %+v, want q=1 at the max %g", last, rtts[len(rtts)-1])
	}
	if q := quantile(rtts, 0.5); q != rtts[10] {
		t.Errorf("median %g, want %g", q, rtts[10])
	}
	big := make([]float64, 100000)
	for i := range big {
		big[i] = float64(i)
	}
	if c := cdfOf(big); len(c) > 400 {
		t.Errorf("%d CDF points for 100k samples", len(c))
	} else {
		assertMonotone(t, c)
	}
}

func assertMonotone(t *testing.T, c []CDFPoint) {
	t.Helper()
	if len(c) == 0 {
		t.Fatal("empty CDF")
	}
	for i := 1; i < len(c); i++ {
		if c[i].US < c[i-1].US || c[i].Q < c[i-1].Q {
			t.Fatalf("not monotone at %d: %+v then %+v", i, c[i-1], c[i])
		}
	}
}

func TestParseBatch(t *testing.T) {
	b, err := os.ReadFile("testdata/stress-ng.txt")
	if err != nil {
		t.Fatal(err)
	}
	// What batchCmd's sed makes of it in the guest.
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "stress-ng: metrc: "); ok {
			_, rest, _ = strings.Cut(rest, "] ")
			lines = append(lines, "sng "+strings.TrimLeft(rest, " "))
		}
	}
	r := parseBatch("b", lines)
	if r.Error != "" || len(r.Stressors) != 1 || r.Stressors[0].Name != "cpu" || r.OpsPerSec != 1777.28 || r.Stressors[0].BogoOps != 1778 {
		t.Errorf("%+v", r)
	}
	if r := parseBatch("b", []string{"sng cpu 1 2 3 4 NaN 6", "sng cpu -1 1 1 1 1 1"}); r.Error == "" {
		t.Errorf("garbage parsed: %+v", r)
	}
}

func TestParseSnap(t *testing.T) {
	a := parseSnap([]string{"snap 10 1 10 0 cpu 100 0 50 800 0 0 3 7 0 0"})
	b := parseSnap([]string{"noise", "snap 110 2 110 1 cpu 150 0 60 900 0 0 4 57 0 0"})
	if !a.ok || !b.ok || b.udpIn-a.udpIn != 100 || b.udpInErr-a.udpInErr != 1 {
		t.Fatalf("%+v %+v", a, b)
	}
	if s := steal(a, b); s != 0.5 {
		t.Errorf("steal %g s, want 0.5", s)
	}
	if c := parseSnap([]string{"snap x 1 1 1 cpu 1 2 3 4 5 6 7 8"}); c.ok {
		t.Errorf("garbage parsed: %+v", c)
	}
}

func TestCommandsAreOneLine(t *testing.T) {
	l := LC{Server: "s", Client: "c", MPS: 100, MsgSize: 64, Port: 11111}
	for _, c := range []string{serverCmd(l, "10.77.0.10"), snapCmd, batchCmd(Batch{VM: "b", Args: "--cpu 1"}, 9), clientCmd(l, "10.77.0.10", 3)} {
		if strings.ContainsAny(c, "\n\r") {
			t.Errorf("multi-line command %q", c)
		}
	}
	if c := serverCmd(l, "10.77.0.10"); !strings.Contains(c, ":2B67 ") {
		t.Errorf("port 11111 is 0x2B67 in /proc/net/udp: %s", c)
	}
}

// The console parser: result lines go to their command, a status or end
// line finishes it, other lines are ignored, a fake id changes nothing.
func TestGuestLines(t *testing.T) {
	g := newGuest("g", nil, nil)
	p := &pending{end: "status", done: make(chan struct{})}
	q := &pending{end: "end", done: make(chan struct{})}
	g.pending["c1"], g.pending["c2"] = p, q
	for _, l := range []string{
		"[    1.0] kernel says something",
		"colibri-exp: ready",
		"colibri-exp: c1 snap 1 2 3",
		"colibri-exp: c9 status 0",
		"colibri-exp: c2 status 0",
		"colibri-exp: c2 sng cpu 1 1 1 1 1 1",
		"colibri-exp: c1 status 3",
		"colibri-exp: c1 snap late",
	} {
		g.line(l)
	}
	select {
	case <-g.ready:
	default:
		t.Error("ready line not seen")
	}
	select {
	case <-p.done:
	default:
		t.Fatal("c1 not done after its status line")
	}
	if p.status != 3 || len(p.lines) != 1 || p.lines[0] != "snap 1 2 3" {
		t.Errorf("c1: status %d lines %q", p.status, p.lines)
	}
	select {
	case <-q.done:
		t.Fatal("a background command ended at its status line")
	default:
	}
	g.line("colibri-exp: c2 end")
	<-q.done
	if len(q.lines) != 1 {
		t.Errorf("c2 lines %q", q.lines)
	}
}
