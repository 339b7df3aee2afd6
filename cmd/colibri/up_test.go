package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

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
		{"unavailable core", "pollers: {cores: [1000]}\nvms: [{name: a}]\n", "CPU 1000 is not available"},
		{"bad offloads", "switches: [{name: s}]\nvms: [{name: a, nics: [{switch: s, offloads: maybe}]}]\n", "vms[0].nics[0].offloads"},
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
		// The port regions the stock virtio-pci driver claimed: the
		// notification port, when it took the port over the MMIO
		// notification region.
		"echo ioports=$(grep -c virtio-pci-modern /proc/ioports)",
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
	out, raw := runUpFile(t, bin, file)

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
		case strings.HasPrefix(rest, "ioports="):
			guest[name]["ioports"] = strings.TrimPrefix(rest, "ioports=")
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
	// Guest a's driver kicks on the port: it claimed its NIC's I/O BAR.
	if n := guest["a"]["ioports"]; n == "" || n == "0" {
		t.Errorf("guest a's virtio-pci driver claimed %q port regions, want its NIC's notification port", n)
	}
	if sa, sb := guest["a"]["sha"], guest["b"]["sha"]; !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sb) || sa != sb {
		t.Errorf("transfer: a received sha256 %q, b served %q", sa, sb)
	}
	if got := num(t, guest["a"]["rxb"]); got < upTransferBytes {
		t.Errorf("guest a received %d bytes, want at least %d", got, upTransferBytes)
	}

	var st struct {
		VMs []struct {
			Name  string `json:"name"`
			Exit  string `json:"exit"`
			Stats struct {
				NICs []struct {
					Kicks        uint64 `json:"kicks"`
					RxInterrupts uint64 `json:"rx_interrupts"`
					TxMalformed  uint64 `json:"tx_malformed"`
				}
			} `json:"stats"`
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
		// Every frame a guest received came with the interrupts its
		// driver asked for; it kicked at least once (the poller sleeps
		// while the guests boot); nothing it sent was malformed.
		if n := v.Stats.NICs; len(n) != 1 || n[0].RxInterrupts == 0 || n[0].Kicks == 0 || n[0].TxMalformed != 0 {
			t.Errorf("VM %s: NIC counters %+v, want one NIC with interrupts and kicks and no malformed frames", v.Name, n)
		} else {
			t.Logf("VM %s eth0: %d kicks, %d rx interrupts", v.Name, n[0].Kicks, n[0].RxInterrupts)
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

// runUpFile runs 'colibri up FILE --stats --stats-json' (eight minutes at
// most) and returns its stdout and the JSON counters; a non-zero exit
// fails the test.
func runUpFile(t *testing.T, bin, file string) (string, []byte) {
	t.Helper()
	statsPath := filepath.Join(t.TempDir(), "stats.json")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "up", file, "--stats", "--stats-json", statsPath)
	// On timeout, SIGQUIT first: the goroutine dump says where it hung.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 15 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("colibri up took %v (where this test runs)\nstdout:\n%s\nstderr:\n%s", time.Since(start).Round(time.Millisecond), &stdout, &stderr)
	if err != nil {
		t.Fatalf("colibri up: %v", err)
	}
	raw, err := os.ReadFile(statsPath)
	if err != nil {
		t.Fatalf("--stats-json: %v", err)
	}
	return stdout.String(), raw
}

// guestLines returns the console lines of guest name (without "name| ").
func guestLines(out, name string) []string {
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, name+"| "); ok {
			lines = append(lines, rest)
		}
	}
	return lines
}

// makeTAP creates TAP device name with the host address cidr, up, and
// removes it when the test ends.
func makeTAP(t *testing.T, name, cidr string) {
	t.Helper()
	for _, args := range [][]string{
		{"tuntap", "add", "dev", name, "mode", "tap"},
		{"addr", "add", cidr, "dev", name},
		{"link", "set", name, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", name).Run() })
}

// TestKVMUpCentral: an lc and a batch guest share one managed core under
// the central policy, with the eBPF observer and the VMs' cgroups. While
// the batch guest spins a CPU-bound loop, it pings the lc guest, which
// must keep answering; the scheduler must have run passes over the real
// vCPUs.
func TestKVMUpCentral(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	dir := t.TempDir()
	const setup = "ip link set eth0 up && ip addr add 10.0.0.%d/24 dev eth0; "
	// lc answers pings (in its kernel) until it has answered 10, bounded.
	// InEchos is the 10th word of the second Icmp: line of /proc/net/snmp
	// (no quotes: the command sits inside colibri.run="...").
	lc := "echos() { set -- $(grep Icmp: /proc/net/snmp | tail -n 1); echo ${10}; }; i=0; while [ $(echos) -lt 10 ] && [ $i -lt 400 ]; do sleep 0.5; i=$((i+1)); done; echo lc-done"
	batch := "(while :; do :; done) & spin=$!; ping -c 10 -i 0.5 -w 150 10.0.0.1 | tail -n 2; kill $spin"
	yaml := "pollers: {}\n" +
		// Scaled for the sandbox (30-50x slower than metal): a 1 ms pass
		// period and threshold. At the defaults (5 µs, 20 µs) the
		// scheduler thread took ~30% of the sandbox's one CPU and the
		// batch guest needed 3m20s to reach init (lc: 41 s).
		"sched: {policy: central, cores: [0], period: 1ms, threshold: 1ms}\n" +
		"switches: [{name: sw0}]\n" +
		"vms:\n" +
		"  - {name: lc, class: lc, nics: [{switch: sw0}], append: 'colibri.run=\"" + strings.ReplaceAll(setup, "%d", "1") + lc + "\"'}\n" +
		"  - {name: batch, class: batch, nics: [{switch: sw0}], append: 'colibri.run=\"" + strings.ReplaceAll(setup, "%d", "2") + batch + "\"'}\n"
	file := filepath.Join(dir, "up.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out, raw := runUpFile(t, bin, file)
	received := -1
	for _, l := range guestLines(out, "batch") {
		if strings.Contains(l, "packets transmitted") {
			_, _ = fmt.Sscanf(l[strings.Index(l, ",")+1:], " %d packets received", &received)
		}
	}
	if received < 8 {
		t.Errorf("the lc guest answered %d of 10 pings while the batch guest spun, want at least 8", received)
	}
	if !slices.Contains(guestLines(out, "lc"), "lc-done") {
		t.Errorf("the lc guest did not count 10 echo requests")
	}
	var st struct {
		Sched *struct {
			Policy string `json:"policy"`
			Passes uint64 `json:"passes"`
			Errors uint64 `json:"errors"`
		} `json:"sched"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("--stats-json: %v", err)
	}
	if st.Sched == nil || st.Sched.Policy != "central" || st.Sched.Passes == 0 {
		t.Errorf("--stats-json sched = %+v, want the central policy with passes", st.Sched)
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

// TestKVMBootNetTAP: 'colibri boot --net' puts a guest on the polled
// datapath with a TAP uplink. The test makes the TAP itself (so colibri
// must leave it in place); the guest pings the host through it, reloads
// its virtio_net driver (a device reset and re-initialisation) and pings
// again, and the host connects to a TCP listener in the guest and sends
// it a line.
func TestKVMBootNetTAP(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	const tap = "coltap0"
	makeTAP(t, tap, "10.0.1.1/24")

	// Between the two halves the guest unloads and reloads virtio_net: the
	// device resets, the port detaches, and the re-initialised driver must
	// get a working NIC again.
	const up = "ip link set eth0 up && ip addr add 10.0.1.2/24 dev eth0; "
	guest := up + "ping -c 3 -w 60 10.0.1.1 | tail -n 2; rmmod virtio_net && modprobe virtio_net && echo reloaded; " +
		up + "ping -c 3 -w 60 10.0.1.1 | tail -n 2; nc -l -p 7000 > /tmp/got; echo got=$(cat /tmp/got)"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "boot", "--mem", "256M", "--stats", "--net", "tap="+tap+",mac=52:54:00:00:01:02",
		"--append", `colibri.run="`+guest+`"`)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// Connect once the guest listens (its boot takes a while here).
	sent := false
	var err error
	for !sent {
		select {
		case err = <-done:
			t.Fatalf("colibri boot ended before the host could connect (%v)\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
		case <-time.After(500 * time.Millisecond):
		}
		c, derr := net.DialTimeout("tcp", "10.0.1.2:7000", time.Second)
		if derr != nil {
			continue
		}
		_, werr := c.Write([]byte("hello-from-host\n"))
		c.Close()
		sent = werr == nil
	}
	err = <-done
	out := stdout.String()
	t.Logf("stdout:\n%s\nstderr:\n%s", out, &stderr)
	if err != nil {
		t.Fatalf("colibri boot: %v", err)
	}
	if n := strings.Count(out, "3 packets transmitted, 3 packets received"); n != 2 {
		t.Errorf("%d of 2 rounds of the guest's pings to the host came back whole (one before, one after reloading virtio_net)", n)
	}
	if !strings.Contains(out, "reloaded") {
		t.Error("the guest could not unload and reload virtio_net")
	}
	if !strings.Contains(out, "got=hello-from-host") {
		t.Error("the line the host sent over TCP did not reach the guest")
	}
	if err := exec.Command("ip", "link", "show", tap).Run(); err != nil {
		t.Errorf("colibri removed the TAP %s it did not create: %v", tap, err)
	}
}

// TestKVMUpXDP: a guest reaches a peer in a network namespace through a
// switch whose uplink is an AF_XDP socket on one end of a veth pair (the
// other end is in the namespace): the guest pings the peer, and the peer
// fetches 4 MiB from the guest's httpd. The guest sends that as TSO
// frames, which the AF_XDP port cannot take: the switch must cut them into
// MTU-sized segments with correct checksums (the peer's kernel drops any
// that are not), and the SHA-256 on both sides must agree.
func TestKVMUpXDP(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	const veth, peer, ns = "colxdp0", "colxdp1", "colxdpns"
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ip("link", "add", veth, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", veth).Run() })
	// A veth hands its peer's TCP frames over with the checksum left to
	// the receiver (CHECKSUM_PARTIAL), and AF_XDP's copy keeps them that
	// way: the peer must send complete frames, as a real NIC's wire does.
	disableTxChecksum(t, peer)
	ip("link", "set", peer, "netns", ns)
	ip("-n", ns, "addr", "add", "10.0.2.1/24", "dev", peer)
	ip("-n", ns, "link", "set", peer, "up")
	ip("link", "set", veth, "up")

	const size = 4 << 20
	guest := "ip link set eth0 up && ip addr add 10.0.2.2/24 dev eth0; ping -c 3 -w 60 10.0.2.1 | tail -n 2; " +
		"mkdir /www; dd if=/dev/urandom of=/www/data bs=1M count=4 2>/dev/null; echo sha=$(sha256sum < /www/data); httpd -p 80 -h /www; " +
		"i=0; while [ $(cat /sys/class/net/eth0/statistics/tx_bytes) -lt " + strconv.Itoa(size) + " ] && [ $i -lt 600 ]; do sleep 0.5; i=$((i+1)); done; sleep 3"
	file := filepath.Join(t.TempDir(), "up.yaml")
	yaml := "switches: [{name: sw0, uplinks: [{xdp: " + veth + "}]}]\n" +
		"vms:\n  - {name: g, nics: [{switch: sw0}], append: 'colibri.run=\"" + guest + "\"'}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	// The peer fetches the file as soon as the guest's httpd answers.
	fetchDone := make(chan fetchResult, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() { fetchDone <- fetchInNetns(ns, "10.0.2.2:80", "/data", stop) }()
	out, raw := runUpFile(t, bin, file)
	lines := guestLines(out, "g")
	if !slices.Contains(lines, "3 packets transmitted, 3 packets received, 0% packet loss") {
		t.Error("the guest's pings to the namespace peer through the AF_XDP uplink did not all come back")
	}
	res := <-fetchDone
	if res.err != nil {
		t.Fatalf("the peer could not fetch the guest's file through the AF_XDP uplink: %v", res.err)
	}
	data := res.body
	sum := sha256.Sum256(data)
	if want := "sha=" + hex.EncodeToString(sum[:]) + " -"; len(data) != size || !slices.Contains(lines, want) {
		t.Errorf("the peer got %d bytes with %s; the guest served %d bytes and printed %q", len(data), want, size, lines)
	}
	checkSoftOffload(t, raw, "xdp:"+veth)
}

// TestKVMUpResetUnderTraffic: guest a reloads its virtio_net driver twice
// (device reset, port detached and re-attached) and takes its link down
// and up while guest b pings the host through the switch's TAP uplink
// without pause. b's pings must not notice (at most the one in flight when
// b stops may be missing), a must reach b and the host afterwards, and the
// poller must have slept while nothing moved and woken on a kick (the
// adaptive idle path on real KVM).
func TestKVMUpResetUnderTraffic(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	const tap = "coltap1"
	makeTAP(t, tap, "10.0.3.254/24")

	const setup = "ip link set eth0 up && ip addr add 10.0.3.%d/24 dev eth0; "
	// b pings the host every 0.2 s until a says it is done (bounded), then
	// stops ping with SIGINT so it prints its summary.
	steady := "nc -l -p 7000 > /tmp/done & ping -i 0.2 10.0.3.254 > /tmp/ping & p=$!; " +
		"i=0; while [ ! -s /tmp/done ] && [ $i -lt 600 ]; do sleep 0.5; i=$((i+1)); done; " +
		"kill -INT $p; sleep 1; tail -n 2 /tmp/ping"
	// a waits until b answers (so b's pings are flowing), then resets its
	// NIC twice and checks it still reaches b and the host.
	resetter := "i=0; until ping -c 1 -W 1 10.0.3.2 >/dev/null || [ $i -gt 120 ]; do i=$((i+1)); done; sleep 2; " +
		"for r in 1 2; do rmmod virtio_net && modprobe virtio_net && " + strings.ReplaceAll(setup, "%d", "1") + " echo reloaded-$r; sleep 1; done; " +
		"ip link set eth0 down && sleep 1 && ip link set eth0 up && echo relinked; " +
		"ping -c 3 -w 60 10.0.3.2 >/dev/null && ping -c 3 -w 60 10.0.3.254 >/dev/null && echo after-reset-ok; " +
		"echo done | timeout 10 nc 10.0.3.2 7000"
	file := filepath.Join(t.TempDir(), "up.yaml")
	yaml := "pollers: {}\n" +
		"switches: [{name: sw0, uplinks: [{tap: " + tap + "}]}]\n" +
		"vms:\n" +
		"  - {name: a, nics: [{switch: sw0}], append: 'colibri.run=\"" + strings.ReplaceAll(setup, "%d", "1") + resetter + "\"'}\n" +
		"  - {name: b, nics: [{switch: sw0}], append: 'colibri.run=\"" + strings.ReplaceAll(setup, "%d", "2") + steady + "\"'}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out, raw := runUpFile(t, bin, file)

	a := guestLines(out, "a")
	for _, want := range []string{"reloaded-1", "reloaded-2", "relinked", "after-reset-ok"} {
		if !slices.Contains(a, want) {
			t.Errorf("guest a did not print %q", want)
		}
	}
	sent, received := -1, -1
	for _, l := range guestLines(out, "b") {
		if strings.Contains(l, "packets transmitted") {
			_, _ = fmt.Sscanf(l, "%d packets transmitted, %d packets received", &sent, &received)
		}
	}
	t.Logf("guest b: %d pings sent to the host, %d answered, while a reset its NIC", sent, received)
	if sent < 10 || received < sent-1 {
		t.Errorf("guest b's pings through the uplink while a reset: %d sent, %d answered; want at least 10 sent and at most one missing", sent, received)
	}

	var st struct {
		Netstack struct {
			Pollers []struct {
				Sleeps  uint64 `json:"sleeps"`
				Wakeups uint64 `json:"wakeups"`
				Frames  uint64 `json:"frames"`
			} `json:"pollers"`
		} `json:"netstack"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("--stats-json: %v", err)
	}
	if len(st.Netstack.Pollers) != 1 {
		t.Fatalf("--stats-json: want one poller, got %s", raw)
	}
	p := st.Netstack.Pollers[0]
	t.Logf("poller: %d sleeps, %d wake-ups, %d frames", p.Sleeps, p.Wakeups, p.Frames)
	if p.Sleeps == 0 || p.Wakeups == 0 || p.Frames == 0 {
		t.Errorf("poller: %d sleeps, %d wake-ups, %d frames; want the poller to have slept while idle and woken on kicks", p.Sleeps, p.Wakeups, p.Frames)
	}
}

type fetchResult struct {
	body []byte
	err  error
}

// fetchInNetns GETs path from the HTTP server at addr (host:port) from
// inside network namespace ns, retrying every second (for up to five
// minutes, or until stop closes) while the server is not up yet. The
// goroutine's thread enters ns and is never used again (it exits with the
// goroutine, which stays locked to it); the connection is dialled on it,
// since a socket belongs to the namespace of the thread that creates it.
func fetchInNetns(ns, addr, path string, stop <-chan struct{}) fetchResult {
	runtime.LockOSThread()
	fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fetchResult{err: fmt.Errorf("open netns %s: %w", ns, err)}
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fetchResult{err: fmt.Errorf("setns %s: %w", ns, err)}
	}
	get := func() ([]byte, error) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
		if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	for i := 0; ; i++ {
		body, err := get()
		var op *net.OpError
		if err == nil || !errors.As(err, &op) || op.Op != "dial" || i == 300 {
			return fetchResult{body: body, err: err}
		}
		select {
		case <-stop:
			return fetchResult{err: err}
		case <-time.After(time.Second):
		}
	}
}

// disableTxChecksum turns transmit checksum offload (and with it TSO) off
// on interface name, as 'ethtool -K name tx off' does.
func disableTxChecksum(t *testing.T, name string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	const ethtoolSTxCsum = 0x17 // ETHTOOL_STXCSUM
	value := struct{ cmd, data uint32 }{cmd: ethtoolSTxCsum}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(ifr.name[:], name)
	ifr.data = unsafe.Pointer(&value)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		t.Fatalf("ETHTOOL_STXCSUM off on %s: %v", name, errno)
	}
	runtime.KeepAlive(&value)
}

// TestKVMUpMixedOffloads: guest a's NIC has offloads: false, guest b's has
// them. b serves 8 MiB to a: b's TSO frames must reach a as complete
// MTU-sized segments that the switch cut in software (a's driver would
// drop anything else), with equal SHA-256 on both sides.
func TestKVMUpMixedOffloads(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	const size = 8 << 20
	client := "ip link set eth0 up && ip addr add 10.0.0.1/24 dev eth0; " +
		"i=0; until wget -q -O /tmp/d http://10.0.0.2/d || [ $i -gt 60 ]; do sleep 1; i=$((i+1)); done; echo sha=$(sha256sum < /tmp/d)"
	server := "ip link set eth0 up && ip addr add 10.0.0.2/24 dev eth0; mkdir /www; dd if=/dev/urandom of=/www/d bs=1M count=8 2>/dev/null; " +
		"echo sha=$(sha256sum < /www/d); httpd -p 80 -h /www; " +
		"i=0; while [ $(cat /sys/class/net/eth0/statistics/tx_bytes) -lt " + strconv.Itoa(size) + " ] && [ $i -lt 600 ]; do sleep 0.5; i=$((i+1)); done; sleep 3"
	file := filepath.Join(t.TempDir(), "up.yaml")
	yaml := "pollers: {}\nswitches: [{name: sw0}]\nvms:\n" +
		"  - {name: a, nics: [{switch: sw0, offloads: false}], append: 'colibri.run=\"" + client + "\"'}\n" +
		"  - {name: b, nics: [{switch: sw0}], append: 'colibri.run=\"" + server + "\"'}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out, raw := runUpFile(t, bin, file)
	sha := map[string]string{}
	for _, name := range []string{"a", "b"} {
		for _, l := range guestLines(out, name) {
			if v, ok := strings.CutPrefix(l, "sha="); ok {
				sha[name] = strings.Fields(v)[0]
			}
		}
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sha["b"]) || sha["a"] != sha["b"] {
		t.Errorf("transfer: a received sha256 %q, b served %q", sha["a"], sha["b"])
	}
	checkSoftOffload(t, raw, "a/eth0")
}

// checkSoftOffload fails the test unless port (in --stats-json output raw)
// got frames the switch finished in software.
func checkSoftOffload(t *testing.T, raw []byte, port string) {
	t.Helper()
	var st struct {
		Netstack struct {
			Switches []struct {
				Ports []struct {
					Name        string `json:"name"`
					TxPackets   uint64 `json:"tx_packets"`
					SoftOffload uint64 `json:"soft_offload"`
				} `json:"ports"`
			} `json:"switches"`
		} `json:"netstack"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("--stats-json: %v", err)
	}
	for _, sw := range st.Netstack.Switches {
		for _, p := range sw.Ports {
			if p.Name == port {
				t.Logf("port %s: %d frames delivered, %d frames finished in software for it", port, p.TxPackets, p.SoftOffload)
				if p.SoftOffload == 0 {
					t.Errorf("port %s: no frame was finished in software for it (its peer's TSO did not reach it)", port)
				}
				return
			}
		}
	}
	t.Errorf("--stats-json has no counters of port %s:\n%s", port, raw)
}
