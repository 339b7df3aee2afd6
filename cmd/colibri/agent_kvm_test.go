package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/colibrivm/colibri/agent/api"
	"github.com/colibrivm/colibri/agent/client"
	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/vmm"
)

// agentRun is a `colibri agent` process under test and its CLI.
type agentRun struct {
	t      *testing.T
	bin    string
	socket string
	cmd    *exec.Cmd
	stderr *testenv.Buffer
	c      *client.Client
}

// cli runs a client command against the agent and returns its exit code
// and output.
func (a *agentRun) cli(args ...string) (int, string, string) {
	a.t.Helper()
	return run(a.t, a.bin, append(args, "--socket", a.socket)...)
}

// must runs a client command that must succeed.
func (a *agentRun) must(args ...string) string {
	a.t.Helper()
	code, out, errs := a.cli(args...)
	if code != 0 {
		a.t.Fatalf("colibri %s: exit %d\n%s%s\nagent log:\n%s", strings.Join(args, " "), code, out, errs, a.stderr.String())
	}
	return out
}

// console returns a VM's console output kept by the agent.
func (a *agentRun) console(vm string) string {
	a.t.Helper()
	return a.must("vm", "console", vm)
}

// waitConsole waits until re matches vm's console output after byte from.
func (a *agentRun) waitConsole(vm string, from int, re string, limit time.Duration) string {
	a.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(limit)
	for {
		out := a.console(vm)
		if from < len(out) {
			if m := rx.FindString(out[from:]); m != "" {
				return m
			}
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("VM %s's console did not show %q within %v; it says:\n%s", vm, re, limit, out)
		}
		time.Sleep(time.Second)
	}
}

func (a *agentRun) info(vm string) api.VM {
	a.t.Helper()
	var v api.VM
	if err := json.Unmarshal([]byte(a.must("vm", "info", vm, "--json")), &v); err != nil {
		a.t.Fatal(err)
	}
	return v
}

// lastTick returns the highest "tick=N" in out, -1 if none.
func lastTick(out string) int {
	best := -1
	for _, m := range regexp.MustCompile(`tick=(\d+)`).FindAllStringSubmatch(out, -1) {
		if n, _ := strconv.Atoi(m[1]); n > best {
			best = n
		}
	}
	return best
}

// TestKVMAgentTwoGuests drives `colibri agent` through its CLI client as
// a user would: two stock-kernel guests on one switch (with a TAP uplink
// the agent creates) ping each other; pausing one stops the counter its
// guest prints every 100 ms and the other's pings to it go unanswered
// (dropped as paused), and resuming it brings both back with no soft
// lockup or stall reported; the policy changes to central live; one
// guest stops (power button) and is deleted while the host's pings to the
// other go on, and a third is created; /metrics parses and agrees with
// info; requests the VMs' states forbid are refused with a clear line;
// and SIGTERM leaves no socket, TAP or cgroup behind.
func TestKVMAgentTwoGuests(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	dir := t.TempDir()
	const tap = "coltap9"
	a := &agentRun{t: t, bin: bin, socket: filepath.Join(testenv.SocketDir(t), "agent.sock"), stderr: &testenv.Buffer{}}
	a.cmd = exec.Command(bin, "agent", "--socket", a.socket, "--switch", "sw0,tap="+tap, "--stop-timeout", "90s")
	a.cmd.Stderr = a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.cmd.Wait() }()
	defer func() {
		if a.cmd.ProcessState == nil {
			a.cmd.Process.Signal(syscall.SIGQUIT)
			<-agentDone
			t.Logf("agent log:\n%s", a.stderr.String())
		}
	}()
	a.c = client.New(a.socket)
	defer a.c.Close()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if _, err := a.c.Ping(context.Background()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not answer within a minute:\n%s", a.stderr.String())
		}
	}
	rss := func(what string) {
		if o, err := vmm.OverheadRSSOf(a.cmd.Process.Pid); err == nil {
			t.Logf("agent RSS beyond guest memory, %s: %.1f MiB (anonymous %.1f, binary and files %.1f) (sandbox)",
				what, float64(o.Total())/(1<<20), float64(o.Anon)/(1<<20), float64(o.File)/(1<<20))
		}
	}
	rss("no VM")
	for _, args := range [][]string{{"addr", "add", "10.0.0.254/24", "dev", tap}, {"link", "set", tap, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	// Every state change, as a client of the event stream sees it.
	evCtx, evStop := context.WithCancel(context.Background())
	var evMu sync.Mutex
	var events []api.Event
	evDone := make(chan struct{})
	go func() {
		defer close(evDone)
		a.c.Events(evCtx, func(ev api.Event) bool {
			evMu.Lock()
			events = append(events, ev)
			evMu.Unlock()
			return true
		})
	}()

	const setup = "ip link set eth0 up; ip addr add 10.0.0.%d/24 dev eth0; "
	guest := func(name string, ip int, script string) string {
		p := filepath.Join(dir, name+".yaml")
		body := fmt.Sprintf("name: %s\ncpus: 1\nmem: 256M\nnics: [{switch: sw0}]\nappend: 'colibri.run=\"%s%s\"'\n", name, fmt.Sprintf(setup, ip), script)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	aFile := guest("a", 1, "i=0; while :; do echo tick=$i; i=$((i+1)); sleep 0.1; done")
	pinger := func(target string) string {
		return "while :; do if ping -c 1 -W 1 " + target + " >/dev/null 2>&1; then echo pong=ok; else echo pong=lost; fi; sleep 0.3; done"
	}
	bFile := guest("b", 2, pinger("10.0.0.1"))
	cFile := guest("c", 3, pinger("10.0.0.1"))

	a.must("vm", "create", aFile, "--start")
	a.must("vm", "create", bFile, "--start")
	if code, _, errs := a.cli("vm", "create", aFile); code == 0 || !strings.Contains(errs, `VM "a": a VM of that name exists`) {
		t.Errorf("creating a twice: exit %d, %q", code, errs)
	}
	a.waitConsole("a", 0, `tick=\d+`, 3*time.Minute)
	a.waitConsole("b", 0, `pong=ok`, 3*time.Minute)
	if out := a.must("vm", "list"); !regexp.MustCompile(`(?m)^a\s+running\s+1\s+256M`).MatchString(out) {
		t.Errorf("vm list:\n%s", out)
	}
	rss("two VMs running")
	for _, vm := range []string{"a", "b"} {
		var ct api.Counters
		if err := json.Unmarshal([]byte(a.must("vm", "counters", vm, "--json")), &ct); err == nil {
			t.Logf("VM %s: created and started to its init in %.2f s (sandbox)", vm, ct.GuestInitSeconds)
		}
	}
	if v := a.info("a"); v.State != "running" || len(v.VCPUs) != 1 || v.VCPUs[0].TID == 0 || len(v.NICs) != 1 || v.NICs[0].Port != "a/eth0" {
		t.Fatalf("info of a: %+v", v)
	}

	// Pause a: its ticks stop, b's pings to it are lost.
	a.must("vm", "pause", "a")
	pausedAt := len(a.console("a"))
	bAt := len(a.console("b"))
	tick0 := lastTick(a.console("a"))
	time.Sleep(4 * time.Second)
	if tick := lastTick(a.console("a")); tick != tick0 {
		t.Errorf("a's counter went from %d to %d while it was paused", tick0, tick)
	}
	a.waitConsole("b", bAt, `pong=lost`, 30*time.Second)
	if v := a.info("a"); v.State != "paused" || !v.NICs[0].Paused || v.NICs[0].Drops["paused"] == 0 {
		t.Errorf("a while paused: state %s, NIC %+v", v.State, v.NICs[0])
	}
	if code, _, errs := a.cli("vm", "pause", "a"); code == 0 || !strings.Contains(errs, "VM a is paused: cannot pause it") {
		t.Errorf("pausing a twice: exit %d, %q", code, errs)
	}
	a.must("vm", "resume", "a")
	bAt = len(a.console("b"))
	a.waitConsole("a", pausedAt, `tick=\d+`, time.Minute)
	a.waitConsole("b", bAt, `pong=ok`, time.Minute)
	if tick := lastTick(a.console("a")); tick <= tick0 {
		t.Errorf("a's counter is at %d after resume, was %d", tick, tick0)
	}

	// The policy changes live while both run.
	if out := a.must("sched", "set", "central", "--threshold", "1ms"); !strings.Contains(out, "policy:    central threshold 1ms") {
		t.Errorf("sched set:\n%s", out)
	}
	aAt, bAt := len(a.console("a")), len(a.console("b"))
	a.waitConsole("a", aAt, `tick=\d+`, time.Minute)
	a.waitConsole("b", bAt, `pong=ok`, time.Minute)

	// The host pings a through the TAP while b stops and goes.
	var pings, answered atomic.Int64
	stopPing := make(chan struct{})
	pingDone := make(chan struct{})
	go func() {
		defer close(pingDone)
		for {
			select {
			case <-stopPing:
				return
			default:
			}
			pings.Add(1)
			// busybox (a make deps package) has ping; the host may have no iputils.
			if exec.Command("busybox", "ping", "-c", "1", "-W", "2", "10.0.0.1").Run() == nil {
				answered.Add(1)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	if code, _, errs := a.cli("vm", "delete", "b"); code == 0 || !strings.Contains(errs, "VM b is running: cannot delete it (stop it first, or delete it with force)") {
		t.Errorf("deleting running b: exit %d, %q", code, errs)
	}
	if out := a.must("vm", "stop", "b"); !strings.Contains(out, "b stopped (power-off, status 0)") {
		t.Errorf("graceful stop of b: %q", out)
	}
	if code, _, errs := a.cli("vm", "pause", "b"); code == 0 || !strings.Contains(errs, "VM b is stopped: cannot pause it") {
		t.Errorf("pausing stopped b: exit %d, %q", code, errs)
	}
	if code, out, _ := a.cli("vm", "wait", "b"); code != 0 || !strings.Contains(out, "power-off, status 0") {
		t.Errorf("wait b: exit %d %q", code, out)
	}
	a.must("vm", "delete", "b")
	if code, _, errs := a.cli("vm", "info", "b"); code == 0 || !strings.Contains(errs, `VM "b": no such VM`) {
		t.Errorf("info of deleted b: exit %d, %q", code, errs)
	}
	a.must("vm", "create", cFile, "--start")
	a.waitConsole("c", 0, `pong=ok`, 3*time.Minute)
	close(stopPing)
	<-pingDone
	t.Logf("the host pinged a %d times while b stopped and c booted: %d answered", pings.Load(), answered.Load())
	if answered.Load() < pings.Load()*9/10 || pings.Load() < 10 {
		t.Errorf("a answered %d of the host's %d pings while b stopped and c booted", answered.Load(), pings.Load())
	}

	// Metrics agree with info: info before ≤ metrics ≤ info after.
	before := a.info("a")
	raw, err := a.c.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	after := a.info("a")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	metric := func(name string, labels map[string]string) float64 {
		f := fams[name]
		if f == nil {
			t.Fatalf("/metrics has no %s", name)
		}
	next:
		for _, m := range f.Metric {
			for k, v := range labels {
				found := false
				for _, l := range m.Label {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
		t.Fatalf("/metrics has no %s%v", name, labels)
		return 0
	}
	for _, c := range []struct {
		name     string
		labels   map[string]string
		low, top float64
	}{
		{"colibri_nic_packets_total", map[string]string{"vm": "a", "nic": "0", "direction": "transmit"}, float64(before.NICs[0].TxPackets), float64(after.NICs[0].TxPackets)},
		{"colibri_nic_packets_total", map[string]string{"vm": "a", "nic": "0", "direction": "receive"}, float64(before.NICs[0].RxPackets), float64(after.NICs[0].RxPackets)},
		{"colibri_nic_drops_total", map[string]string{"vm": "a", "nic": "0", "cause": "paused"}, float64(before.NICs[0].Drops["paused"]), float64(after.NICs[0].Drops["paused"])},
		{"colibri_vcpu_time_seconds_total", map[string]string{"vm": "a", "vcpu": "0"}, before.VCPUs[0].RunSeconds, after.VCPUs[0].RunSeconds},
		{"colibri_vcpu_delay_seconds_total", map[string]string{"vm": "a", "vcpu": "0"}, before.VCPUs[0].WaitSeconds, after.VCPUs[0].WaitSeconds},
		{"colibri_vm_state", map[string]string{"vm": "a", "state": "running"}, 1, 1},
		{"colibri_vm_state", map[string]string{"vm": "c", "state": "running"}, 1, 1},
		{"colibri_sched_policy", map[string]string{"policy": "central"}, 1, 1},
	} {
		if got := metric(c.name, c.labels); got < c.low || got > c.top {
			t.Errorf("%s%v = %v, info says between %v and %v", c.name, c.labels, got, c.low, c.top)
		}
	}
	if before.VCPUs[0].RunSeconds <= 0 {
		t.Errorf("a's vCPU ran %v s by the observer", before.VCPUs[0].RunSeconds)
	}
	if after.NICs[0].Drops["paused"] == 0 {
		t.Error("no frame to a was dropped as paused")
	}
	if out := a.console("a"); strings.Contains(out[pausedAt:], "soft lockup") || strings.Contains(out[pausedAt:], "stall") ||
		strings.Contains(out[pausedAt:], "watchdog") || strings.Contains(out[pausedAt:], "clocksource") {
		t.Errorf("a's console after the pause reports a lockup or a clock problem:\n%s", out[pausedAt:])
	}

	// SIGTERM: every VM powers off, and nothing is left behind.
	pid := a.cmd.Process.Pid
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-agentDone:
		if err != nil {
			t.Errorf("the agent exited with %v after SIGTERM:\n%s", err, a.stderr.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("the agent did not stop within 3 minutes of SIGTERM:\n%s", a.stderr.String())
	}
	evStop()
	<-evDone
	if _, err := os.Stat(a.socket); !os.IsNotExist(err) {
		t.Errorf("the socket is still there: %v", err)
	}
	if exec.Command("ip", "link", "show", tap).Run() == nil {
		t.Errorf("TAP %s is still there", tap)
	}
	for _, cg := range []string{fmt.Sprintf("/sys/fs/cgroup/colibri/%d", pid), fmt.Sprintf("/sys/fs/cgroup/cpu/colibri/%d", pid)} {
		if _, err := os.Stat(cg); err == nil {
			t.Errorf("cgroup %s is still there", cg)
		}
	}
	log := a.stderr.String()
	for _, vm := range []string{"a", "c"} {
		if !strings.Contains(log, " vm="+vm+" state=stopped reason=power-off") {
			t.Errorf("the agent's log does not show %s powering off at SIGTERM:\n%s", vm, log)
		}
	}
	evMu.Lock()
	defer evMu.Unlock()
	var aStates []string
	for _, ev := range events {
		if ev.VM == "a" && ev.Type == "state" {
			aStates = append(aStates, ev.State)
		}
	}
	if got, want := strings.Join(aStates, " "), "running paused running stopping stopped"; got != want {
		t.Errorf("events: a went through %q, want %q", got, want)
	}
	t.Logf("agent log:\n%s", log)
}
