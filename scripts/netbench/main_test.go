package main

import (
	"strings"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/kvmdebugfs"
)

// run builds a result whose TCP phase moved 16 MiB in secs seconds with
// exits exits over 1,000 packets, and whose RTTs are rtts.
func fakeRun(name string, secs float64, exits uint64, rtts ...float64) result {
	t0 := time.Unix(1000, 0)
	at := func(d float64) time.Time { return t0.Add(time.Duration(d * float64(time.Second))) }
	return result{name: name, rtts: rtts, bytes: 16 << 20, marks: map[string]mark{
		"ping-start": {at: at(0), exits: kvmdebugfs.Counters{"exits": 0}, tx: 0, rx: 0},
		"ping-end":   {at: at(1), exits: kvmdebugfs.Counters{"exits": exits}, tx: 500, rx: 500},
		"tcp-start":  {at: at(2), exits: kvmdebugfs.Counters{"exits": exits}, tx: 500, rx: 500},
		"tcp-end":    {at: at(2 + secs), exits: kvmdebugfs.Counters{"exits": 2 * exits}, tx: 1000, rx: 1000},
	}}
}

func TestSummaryMediansAndVerdicts(t *testing.T) {
	rs := []result{
		fakeRun("colibri", 1, 3000, 1, 2, 3),
		fakeRun("qemu-vhost", 2, 4000, 2, 3, 4),
		fakeRun("colibri", 0.5, 2000, 1, 1, 1),
		fakeRun("qemu-vhost", 4, 5000, 5, 5, 5),
		fakeRun("colibri", 2, 9000, 9, 9, 9),
		{name: "qemu-vhost", err: errTest},
	}
	var sb strings.Builder
	printSummary(&sb, rs)
	out := sb.String()
	for _, want := range []string{
		"colibri 3 of 3; qemu-vhost 2 of 3",
		"| RTT p50 (ms) | 2.000 (1.000–9.000) | 4.000 (3.000–5.000) | colibri by 50% |",
		"| TCP (MiB/s) | 16 (8.000–32) | 6.000 (4.000–8.000) | colibri by 167% |",
		"| ping exits/1k pkts | 3000 (2000–9000) | 4500 (4000–5000) | colibri by 33% |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

var errTest = errorString("guest a never finished")

type errorString string

func (e errorString) Error() string { return string(e) }

func TestAppendRTTs(t *testing.T) {
	got := appendRTTs([]float64{9}, "nbrtt 1.25 0.9 12")
	if len(got) != 4 || got[0] != 9 || got[1] != 1.25 || got[2] != 0.9 || got[3] != 12 {
		t.Fatalf("appendRTTs: %v", got)
	}
	if !rttRe.MatchString("nbrtt 1.25 0.9") || rttRe.MatchString("nbrtt") || rttRe.MatchString("nbrtt 1.2 x") {
		t.Fatal("rttRe matches the wrong lines")
	}
}

// Warm-up times are kept apart from the measured ones and give their own
// summary figure.
func TestWarmupKeptApart(t *testing.T) {
	lines := make(chan line, 8)
	for _, s := range []string{"nbwarm 20 1 1 1 1 1 1 1 1 20", "nbrtt 2 2", "nb got=16777216"} {
		lines <- line{vm: "a", text: s}
	}
	close(lines)
	var r result
	collect(&r, config{pings: 2, mib: 16}, lines, func() kvmdebugfs.Counters { return nil })
	if len(r.rtts) != 2 || len(r.warmRTTs) != 10 {
		t.Fatalf("rtts %v, warm-up %v", r.rtts, r.warmRTTs)
	}
	for _, f := range figures {
		if f.name == "warm-up RTT p90" {
			if v, ok := f.get(r); !ok || v != 20 {
				t.Fatalf("warm-up p90 = %v, %v; want 20", v, ok)
			}
			return
		}
	}
	t.Fatal("no warm-up figure")
}

// "nb go" moves the start of the phase the last mark opened, not its
// counters.
func TestGoMovesThePhaseStart(t *testing.T) {
	t0 := time.Unix(100, 0)
	lines := make(chan line, 8)
	lines <- line{vm: "a", text: "nb tcp-start tx=10 rx=20", at: t0}
	lines <- line{vm: "a", text: "nb go", at: t0.Add(time.Second)}
	lines <- line{vm: "a", text: "nb tcp-end tx=110 rx=220", at: t0.Add(3 * time.Second)}
	close(lines)
	var r result
	n := uint64(0)
	collect(&r, config{pings: 1, mib: 16}, lines, func() kvmdebugfs.Counters { n += 7; return kvmdebugfs.Counters{"exits": n} })
	ph, ok := r.phase("tcp-start", "tcp-end")
	if !ok || ph.dur != 2*time.Second || ph.packets != 300 || ph.exits["exits"] != 7 {
		t.Fatalf("phase %+v, %v; want 2 s, 300 packets, 7 exits", ph, ok)
	}
}

func TestThreadRole(t *testing.T) {
	for comm, want := range map[string]string{
		"vcpu0": "vcpu", "CPU 1/KVM": "vcpu", "poller0": "dp", "vhost-4242": "dp",
		"colibri": "other", "qemu-system-x86": "other", "CPU": "other", "vsched": "other",
	} {
		if got := threadRole(comm); got != want {
			t.Errorf("threadRole(%q) = %q, want %q", comm, got, want)
		}
	}
}
