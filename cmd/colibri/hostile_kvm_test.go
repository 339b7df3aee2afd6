package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/colibrivm/colibri/internal/newc"
	"github.com/colibrivm/colibri/internal/testenv"
)

// hostileTransferMiB is the size of the file guest b serves to guest c
// while guest a attacks its devices.
const hostileTransferMiB = 4

// hostileKinds are attack kinds every run must have made (at least
// once on each device they apply to): the hostile-guest issue's list.
var hostileKinds = []string{
	"status-order", "queue-size", "queue-late", "queue-select-oob", "readonly-regs", "vectors-oob",
	"bar-junk", "cfg-junk", "msix-anywhere", "bar-move", "kick-storm", "reset-race", "churn",
	"rings-outside", "rings-misaligned", "rings-overlap", "used-readonly", "used-vga",
	"ring-desc-loop", "ring-indirect-loop", "ring-indirect-nested", "ring-indirect-size", "ring-indirect-chained",
	"ring-indirect-outside", "ring-len-4g", "ring-addr-outside", "ring-chain-over-4g", "ring-index-jump",
	"ring-head-oob", "ring-next-oob", "ring-write-then-read",
	"rx-desc-loop", "ctrl-desc-loop", "net-no-pair", "tx-malformed", "tx-spoof", "tx-toctou", "ctrl-bad", "rx-readonly", "blk-bad", "valid",
}

// TestKVMHostileGuest: guest a runs internal/hostile as root, which
// unbinds its virtio-net, -blk and -rng drivers, maps their BARs through
// sysfs and attacks the transport and the rings for 40 s (out-of-order
// status, bad queue registers, rings outside RAM or overlapping, MSI-X
// tables pointing anywhere, the BAR moved onto a neighbour, descriptor
// loops, nested and huge indirect tables, lengths near 4 GiB, chains
// over 4 GiB, index jumps, read-only used rings, malformed and spoofed
// frames, bad disk requests...), checking each outcome from inside the
// guest. Meanwhile guest c fetches a file from guest b over the same
// switch, again and again. It holds when colibri ran it all to the end;
// every attack had its expected outcome (no miss), the attacker's canary
// pages are intact and its devices work again after their drivers are
// bound again; colibri counted what the attacker did (the devices
// marked as needing reset, the failed requests, the spoofed frames) at
// least as often as the attacker saw it, and refused exactly the writes
// it must refuse; b's and c's devices counted nothing of the kind; every
// copy c fetched, at least one of them while the attack ran, has the
// SHA-256 b served; and c's sniffer saw no frame with a source address
// no guest has (a's tx-toctou forges one while the poller switches).
// COLIBRI_HOSTILE_SEED picks another seed (default 1).
func TestKVMHostileGuest(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	images := testenv.Images(t)
	dir := t.TempDir()

	// a's initrd: the default one with the attacker appended.
	base, err := os.ReadFile(filepath.Join(images, "initrd.img"))
	if err != nil {
		t.Fatal(err)
	}
	prog, err := os.ReadFile(hostileBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "hostile-initrd.img")
	f, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	if err := newc.Append(f, base, []newc.Entry{{Name: "hostile", Mode: 0o755, Data: prog}}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// a's disk, which its attacks write.
	disk := filepath.Join(dir, "scratch.img")
	if err := os.WriteFile(disk, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}

	seed := "1"
	if s := os.Getenv("COLIBRI_HOSTILE_SEED"); s != "" {
		seed = s
	}
	const setup = "ip link set eth0 up && ip addr add 10.0.0.%d/24 dev eth0; "
	// a waits until c answers, attacks, then (its drivers bound again)
	// pings c and tells it to stop fetching.
	attacker := strings.ReplaceAll(setup, "%d", "3") +
		"i=0; until ping -c 1 -W 1 10.0.0.1 >/dev/null || [ $i -gt 300 ]; do i=$((i+1)); done; " +
		"/hostile -seed " + seed + " -duration 40s -ip 10.0.0.3 -peer 10.0.0.1; " +
		strings.ReplaceAll(setup, "%d", "3") + "ping -c 3 -w 60 10.0.0.1 | tail -n 2; " +
		"i=0; until echo done | timeout 10 nc 10.0.0.1 7000 || [ $i -gt 10 ]; do sleep 1; i=$((i+1)); done; echo told-done"
	// c fetches b's file until a says it is done (bounded: 300 s), then
	// tells b.
	// Its sniffer counts frames that reach it with a source MAC none of
	// the three has (a forged one the switch let through).
	client := strings.ReplaceAll(setup, "%d", "1") +
		"/hostile -sniff 52:54:00:00:00:0a,52:54:00:00:00:0b,52:54:00:00:00:0c & sp=$!; " +
		"nc -l -p 7000 > /tmp/done & n=0; t0=$(date +%s); " +
		"while [ ! -s /tmp/done ] && [ $(($(date +%s) - t0)) -lt 300 ]; do " +
		"if wget -q -O /tmp/data http://10.0.0.2/data; then n=$((n+1)); echo sha=$(sha256sum < /tmp/data); else sleep 1; fi; done; " +
		"echo fetches=$n; kill $sp; wait $sp; i=0; until echo stop | timeout 10 nc 10.0.0.2 7001 || [ $i -gt 10 ]; do sleep 1; i=$((i+1)); done"
	// b serves until c says stop (bounded), then checks its copy.
	server := strings.ReplaceAll(setup, "%d", "2") +
		"mkdir /www; dd if=/dev/urandom of=/www/data bs=1M count=" + strconv.Itoa(hostileTransferMiB) + " 2>/dev/null; " +
		"echo sha=$(sha256sum < /www/data); httpd -p 80 -h /www; timeout 360 nc -l -p 7001 > /dev/null; " +
		"echo sha-end=$(sha256sum < /www/data)"
	yaml := "pollers: {}\n" +
		"switches: [{name: sw0}]\n" +
		"vms:\n" +
		"  - {name: a, mem: 256M, initrd: '" + initrd + "', disks: [{path: '" + disk + "'}], nics: [{switch: sw0, mac: '52:54:00:00:00:0a'}], append: 'colibri.run=\"" + attacker + "\"'}\n" +
		"  - {name: b, mem: 192M, nics: [{switch: sw0, mac: '52:54:00:00:00:0b'}], append: 'colibri.run=\"" + server + "\"'}\n" +
		"  - {name: c, mem: 192M, initrd: '" + initrd + "', nics: [{switch: sw0, mac: '52:54:00:00:00:0c'}], append: 'colibri.run=\"" + client + "\"'}\n"
	file := filepath.Join(dir, "up.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out, raw := runUpFile(t, bin, file)
	lines := strings.Split(out, "\n")

	// The attacker's own report.
	var sum map[string]string
	var rebind string
	start, end := -1, -1
	for i, l := range lines {
		rest, ok := strings.CutPrefix(l, "a| hostile: ")
		switch {
		case !ok:
		case strings.HasPrefix(rest, "RAM ends at"):
			start = i
		case strings.HasPrefix(rest, "summary "):
			end = i
			sum = map[string]string{}
			for _, kv := range strings.Fields(strings.TrimPrefix(rest, "summary ")) {
				k, v, _ := strings.Cut(kv, "=")
				sum[k] = v
			}
		case strings.HasPrefix(rest, "rebind "):
			rebind = strings.TrimPrefix(rest, "rebind ")
		}
	}
	if sum == nil {
		t.Fatalf("the attacker printed no summary")
	}
	t.Logf("attacker: %d attacks in %s s (sandbox if in one), seed %s", atoi(t, sum["attacks"]), sum["secs"], sum["seed"])
	if sum["misses"] != "0" || sum["setup_failures"] != "0" || sum["dead"] != "none" {
		t.Errorf("attacker: %s misses, %s setup failures, dead devices %s; want none (its MISS lines say what)", sum["misses"], sum["setup_failures"], sum["dead"])
	}
	if sum["canary"] != "intact" {
		t.Errorf("the attacker's canary pages changed")
	}
	kinds := map[string][4]int{}
	for _, k := range strings.Split(sum["kinds"], ",") {
		f := strings.Split(k, ":")
		if len(f) != 5 {
			t.Fatalf("kinds entry %q", k)
		}
		kinds[f[0]] = [4]int{atoi(t, f[1]), atoi(t, f[2]), atoi(t, f[3]), atoi(t, f[4])}
	}
	var broke, inconclusive int
	for _, k := range hostileKinds {
		c, ok := kinds[k]
		if !ok || c[0] == 0 {
			t.Errorf("attack kind %s never ran", k)
		}
		// Malformed rings must break the device every time (a receive
		// queue only when a frame came to read it).
		if strings.HasPrefix(k, "ring-") || strings.HasPrefix(k, "ctrl-") && k != "ctrl-bad" || k == "rings-outside" || k == "rings-misaligned" || k == "net-no-pair" {
			if c[1] != c[0] {
				t.Errorf("attack kind %s: %d of %d runs made the device need a reset", k, c[1], c[0])
			}
		}
	}
	for k, c := range kinds {
		broke += c[1]
		if strings.HasPrefix(k, "rx-") && k != "rx-readonly" {
			inconclusive += c[3]
			if c[1]+c[3] != c[0] {
				t.Errorf("attack kind %s: %d runs, %d broke the device, %d found no frame", k, c[0], c[1], c[3])
			}
		}
	}
	t.Logf("attacker: %d kinds, %d attacks that broke a device, %d receive attacks no frame reached", len(kinds), broke, inconclusive)
	if rebind != "net=ok blk=ok rng=ok" {
		t.Errorf("after rebinding the drivers: %q, want every device ok", rebind)
	}
	a := guestLines(out, "a")
	if !slices.Contains(a, "3 packets transmitted, 3 packets received, 0% packet loss") || !slices.Contains(a, "told-done") {
		t.Errorf("guest a's network did not work after its driver was bound again")
	}

	// What reached c.
	sniffed := regexp.MustCompile(`^hostile: sniffed (\d+) frames, (\d+) with a foreign source MAC \(first: (\S+)\), (\d+) of ethertype 0x88b5$`)
	var sniff []string
	for _, l := range guestLines(out, "c") {
		if m := sniffed.FindStringSubmatch(l); m != nil {
			sniff = m
		}
	}
	if sniff == nil {
		t.Errorf("c's sniffer printed no count")
	} else {
		t.Logf("c received %s frames, %s of them a's probes (tx-toctou), %s with a forged source", sniff[1], sniff[4], sniff[2])
		if sniff[2] != "0" {
			t.Errorf("c received %s frames with a source MAC no guest has (the first: %s): the switch let forged sources through", sniff[2], sniff[3])
		}
		if sniff[4] == "0" {
			t.Errorf("none of a's tx-toctou probes reached c: its sniffer saw nothing to judge")
		}
	}

	// The transfer beside it.
	var want string
	for _, l := range guestLines(out, "b") {
		if v, ok := strings.CutPrefix(l, "sha="); ok {
			want = strings.Fields(v)[0]
		}
		if v, ok := strings.CutPrefix(l, "sha-end="); ok && strings.Fields(v)[0] != want {
			t.Errorf("b's file changed while it was served: sha256 %s, then %s", want, v)
		}
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(want) {
		t.Fatalf("b printed no sha256 of its file")
	}
	fetches, during := 0, 0
	for i, l := range lines {
		v, ok := strings.CutPrefix(l, "c| sha=")
		if !ok {
			continue
		}
		fetches++
		if got := strings.Fields(v)[0]; got != want {
			t.Errorf("c's fetch %d: sha256 %s, b served %s", fetches, got, want)
		}
		if i > start && i < end {
			during++
		}
	}
	t.Logf("transfer: c fetched %d MiB %d times (%d while the attack ran), sha256 %s", hostileTransferMiB, fetches, during, want)
	if during == 0 {
		t.Errorf("no fetch completed while the attack ran (%d in all)", fetches)
	}

	// colibri's counters.
	var st struct {
		VMs []struct {
			Name  string `json:"name"`
			Exit  string `json:"exit"`
			Stats struct {
				Devices []struct {
					Kind      string `json:"kind"`
					Transport struct {
						Activations   uint64 `json:"activations"`
						Resets        uint64 `json:"resets"`
						RefusedWrites uint64 `json:"refused_writes"`
						NeedsReset    uint64 `json:"needs_reset"`
					} `json:"transport"`
					Errors uint64 `json:"errors"`
				}
			} `json:"stats"`
		} `json:"vms"`
		Netstack struct {
			Switches []struct {
				Ports []struct {
					Name  string `json:"name"`
					Drops struct {
						Spoofed uint64 `json:"spoofed"`
					} `json:"drops"`
				} `json:"ports"`
			} `json:"switches"`
		} `json:"netstack"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("--stats-json: %v", err)
	}
	seen := map[string]bool{}
	for _, v := range st.VMs {
		if v.Exit != "power-off" {
			t.Errorf("VM %s ended by %q, want power-off", v.Name, v.Exit)
		}
		for _, d := range v.Stats.Devices {
			tr := d.Transport
			if v.Name != "a" {
				if tr.RefusedWrites+tr.NeedsReset+d.Errors != 0 {
					t.Errorf("VM %s's %s (not attacked): %d refused writes, needs reset %d times, %d errors", v.Name, d.Kind, tr.RefusedWrites, tr.NeedsReset, d.Errors)
				}
				continue
			}
			kind := strings.TrimPrefix(d.Kind, "virtio-")
			seen[kind] = true
			ds := deviceCounts(t, sum[kind])
			t.Logf("a's %s: the attacker made %d attacks, saw needs-reset %d times, made %d writes to refuse and %d bad requests, %d/%d valid requests worked; colibri: %d activations, %d resets, needs reset %d times, %d refused writes, %d request errors",
				d.Kind, ds["attacks"], ds["needs_reset"], ds["refused"], ds["errors"], ds["valid_ok"], ds["valid_n"], tr.Activations, tr.Resets, tr.NeedsReset, tr.RefusedWrites, d.Errors)
			if ds["needs_reset"] == 0 || tr.NeedsReset < uint64(ds["needs_reset"]) {
				t.Errorf("a's %s: colibri marked it as needing reset %d times, the attacker saw it %d times", d.Kind, tr.NeedsReset, ds["needs_reset"])
			}
			// Every write that must be refused was, and nothing else was
			// (the guest's own drivers, before and after, break no rule).
			if tr.RefusedWrites != uint64(ds["refused"]) || ds["refused"] == 0 {
				t.Errorf("a's %s: colibri refused %d writes, the attacker made %d it must refuse", d.Kind, tr.RefusedWrites, ds["refused"])
			}
			if d.Errors < uint64(ds["errors"]) {
				t.Errorf("a's %s: colibri counted %d request errors, the attacker made %d bad requests", d.Kind, d.Errors, ds["errors"])
			}
			if ds["valid_n"] == 0 || ds["valid_ok"] != ds["valid_n"] {
				t.Errorf("a's %s: %d of %d valid requests worked", d.Kind, ds["valid_ok"], ds["valid_n"])
			}
		}
	}
	for _, k := range []string{"net", "blk", "rng"} {
		if !seen[k] {
			t.Errorf("--stats-json has no virtio-%s of VM a", k)
		}
	}
	spoofed := -1
	for _, sw := range st.Netstack.Switches {
		for _, p := range sw.Ports {
			if p.Name == "a/eth0" {
				spoofed = int(p.Drops.Spoofed)
			}
		}
	}
	if sent := deviceCounts(t, sum["net"])["spoofed"]; sent == 0 || spoofed < sent {
		t.Errorf("the switch dropped %d spoofed frames from a, which sent %d", spoofed, sent)
	} else {
		t.Logf("switch: dropped %d spoofed frames from a (it sent %d on purpose)", spoofed, sent)
	}
}

// deviceCounts parses one device's entry of the attacker's summary
// ("attacks:85,needs_reset:56,...,valid:35/35,...").
func deviceCounts(t *testing.T, s string) map[string]int {
	t.Helper()
	m := map[string]int{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			t.Errorf("device counts %q", s)
			return m
		}
		if k == "valid" {
			ok, n, _ := strings.Cut(v, "/")
			m["valid_ok"], m["valid_n"] = atoi(t, ok), atoi(t, n)
			continue
		}
		m[k] = atoi(t, v)
	}
	return m
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Errorf("attacker summary: %q is not a number", s)
	}
	return n
}

// hostileBinary returns the attacker: $COLIBRI_HOSTILE ('make test'
// builds it on the host, since compiling inside the KVM sandbox's
// emulated CPU takes minutes), or one built here into t's temporary
// directory.
func hostileBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("COLIBRI_HOSTILE"); p != "" {
		return p
	}
	out := filepath.Join(t.TempDir(), "hostile")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./internal/hostile")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the attacker (internal/hostile): %v\n%s", err, b)
	}
	return out
}
