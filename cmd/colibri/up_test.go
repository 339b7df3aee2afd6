package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/testenv"
)

// TestUpBadFile: a bad up file is one 'colibri: ...' line naming the
// field, before anything starts (so no KVM is needed).
func TestUpBadFile(t *testing.T) {
	bin := testenv.Binary(t)
	dir := t.TempDir()
	for _, tc := range []struct{ name, body, want string }{
		{"unknown key", "vms: [{name: a, cpu: 1}]\n", "cpu"},
		{"missing name", "vms: [{cpus: 1}]\n", "vms[0]"},
		{"bad size", "vms: [{name: a, mem: 12Q}]\n", "vms[0].mem"},
		{"duplicate name", "vms: [{name: a}, {name: a}]\n", "duplicate"},
		{"no such switch", "vms: [{name: a, nics: [{switch: sw9}]}]\n", "sw9"},
		{"duplicate mac", "switches: [{name: s}]\nvms:\n- {name: a, nics: [{switch: s, mac: '52:54:00:00:00:01'}]}\n- {name: b, nics: [{switch: s, mac: '52:54:00:00:00:01'}]}\n", "52:54:00:00:00:01"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
		if err := os.WriteFile(path, []byte(tc.body), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := run(t, bin, "up", path)
		assertOneLineError(t, tc.name, code, stderr, tc.want)
	}
	code, _, stderr := run(t, bin, "up", filepath.Join(dir, "absent.yaml"))
	assertOneLineError(t, "missing file", code, stderr, "absent.yaml")
}

// upTransferBytes is the size of the file guest b serves to guest a.
const upTransferBytes = 24 << 20

// TestKVMUpTwoGuests: two stock-kernel guests on one netstack switch, run
// by 'colibri up': they ping each other both ways, a fetches 24 MiB of
// random data from b over TCP (busybox httpd and wget) and both print its
// SHA-256, and the switch's per-port counters agree with what each
// guest's driver says it sent.
func TestKVMUpTwoGuests(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	dir := t.TempDir()
	const stats = "cd /sys/class/net/eth0/statistics; echo stats tx=$(cat tx_packets) rx=$(cat rx_packets) txb=$(cat tx_bytes) rxb=$(cat rx_bytes)"
	const setup = "ip link set eth0 up && ip addr add 10.0.0.%d/24 dev eth0; "
	server := strings.Join([]string{
		"mkdir /www; dd if=/dev/urandom of=/www/data bs=1M count=" + strconv.Itoa(upTransferBytes>>20) + " 2>/dev/null",
		"echo sha=$(sha256sum < /www/data)",
		"httpd -p 80 -h /www",
		"ping -c 3 -w 60 10.0.0.1 >/dev/null && echo ping-ok",
		// Serve until the file has left (bounded), then let the last ACKs land.
		"i=0; while [ $(cat /sys/class/net/eth0/statistics/tx_bytes) -lt " + strconv.Itoa(upTransferBytes) + " ] && [ $i -lt 600 ]; do sleep 0.5; i=$((i+1)); done; sleep 3",
		stats,
	}, "; ")
	client := strings.Join([]string{
		"ping -c 3 -w 60 10.0.0.2 >/dev/null && echo ping-ok",
		// b's httpd starts once its file is written: retry until then.
		"i=0; until wget -q -O /tmp/data http://10.0.0.2/data || [ $i -gt 60 ]; do sleep 1; i=$((i+1)); done",
		"echo sha=$(sha256sum < /tmp/data)",
		"sleep 1", stats,
	}, "; ")
	file := filepath.Join(dir, "up.yaml")
	// One unpinned poller: the sandbox may have a single CPU.
	yaml := "pollers: {}\n" +
		"switches: [{name: sw0}]\n" +
		"vms:\n" +
		"  - {name: a, cpus: 1, mem: 256M, nics: [{switch: sw0, mac: '52:54:00:00:00:0a'}], append: 'colibri.run=\"" + strings.ReplaceAll(setup, "%d", "1") + client + "\"'}\n" +
		"  - {name: b, cpus: 1, mem: 256M, nics: [{switch: sw0, mac: '52:54:00:00:00:0b'}], append: 'colibri.run=\"" + strings.ReplaceAll(setup, "%d", "2") + server + "\"'}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	statsPath := filepath.Join(dir, "stats.json")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "up", file, "--stats", "--stats-json", statsPath)
	var stdoutBuf, stderrBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdoutBuf, &stderrBuf
	start := time.Now()
	err := cmd.Run()
	out, stderr := stdoutBuf.String(), stderrBuf.String()
	t.Logf("colibri up took %v (where this test runs)\nstdout:\n%s\nstderr:\n%s", time.Since(start).Round(time.Millisecond), out, stderr)
	if err != nil {
		t.Fatalf("colibri up: %v", err)
	}

	guest := map[string]map[string]string{"a": {}, "b": {}}
	for _, line := range strings.Split(out, "\n") {
		name, rest, ok := strings.Cut(line, "| ")
		if !ok || guest[name] == nil {
			continue
		}
		switch {
		case rest == "ping-ok":
			guest[name]["ping"] = "ok"
		case strings.HasPrefix(rest, "sha="):
			guest[name]["sha"] = strings.Fields(strings.TrimPrefix(rest, "sha="))[0]
		case strings.HasPrefix(rest, "stats "):
			for _, kv := range strings.Fields(strings.TrimPrefix(rest, "stats ")) {
				k, v, _ := strings.Cut(kv, "=")
				guest[name][k] = v
			}
		}
	}
	for _, name := range []string{"a", "b"} {
		if guest[name]["ping"] != "ok" {
			t.Errorf("guest %s could not ping the other", name)
		}
	}
	if sa, sb := guest["a"]["sha"], guest["b"]["sha"]; !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sb) || sa != sb {
		t.Errorf("transfer: a received sha256 %q, b served %q", sa, sb)
	}
	if got := num(t, guest["a"]["rxb"]); got < upTransferBytes {
		t.Errorf("guest a received %d bytes, want at least %d", got, upTransferBytes)
	}

	raw, err := os.ReadFile(statsPath)
	if err != nil {
		t.Fatalf("--stats-json: %v", err)
	}
	var st struct {
		VMs []struct {
			Name string `json:"name"`
			Exit string `json:"exit"`
		} `json:"vms"`
		Netstack struct {
			Pollers []struct {
				Frames  uint64 `json:"frames"`
				Wakeups uint64 `json:"wakeups"`
			} `json:"pollers"`
			Switches []struct {
				Name  string `json:"name"`
				Ports []struct {
					Name      string `json:"name"`
					RxPackets uint64 `json:"rx_packets"`
					RxBytes   uint64 `json:"rx_bytes"`
					TxPackets uint64 `json:"tx_packets"`
				} `json:"ports"`
			} `json:"switches"`
		} `json:"netstack"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("--stats-json: %v\n%s", err, raw)
	}
	for _, v := range st.VMs {
		if v.Exit != "power-off" {
			t.Errorf("VM %s ended by %q, want power-off", v.Name, v.Exit)
		}
	}
	if len(st.Netstack.Switches) != 1 || len(st.Netstack.Switches[0].Ports) != 2 {
		t.Fatalf("stats: want one switch with two ports, got %s", raw)
	}
	var frames uint64
	for _, p := range st.Netstack.Pollers {
		frames += p.Frames
	}
	var rxSum uint64
	for _, p := range st.Netstack.Switches[0].Ports {
		name := strings.TrimSuffix(p.Name, "/eth0")
		g := guest[name]
		if g == nil {
			t.Errorf("stats: unexpected port %q", p.Name)
			continue
		}
		rxSum += p.RxPackets
		// The guest printed its counters shortly before powering off; a
		// frame or two (IPv6 housekeeping) may follow. Nothing may be
		// missing.
		if sent := num(t, g["tx"]); p.RxPackets < sent || p.RxPackets > sent+16 {
			t.Errorf("port %s: switch received %d frames from the guest, the guest's driver counts %d sent", p.Name, p.RxPackets, sent)
		}
		if recv := num(t, g["rx"]); p.TxPackets < recv {
			t.Errorf("port %s: switch delivered %d frames, the guest's driver counts %d received", p.Name, p.TxPackets, recv)
		}
	}
	if frames != rxSum {
		t.Errorf("pollers took %d frames from the guests, the ports counted %d", frames, rxSum)
	}
}

func num(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Errorf("guest counter %q: %v", s, err)
	}
	return n
}
