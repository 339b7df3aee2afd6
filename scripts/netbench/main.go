// Command netbench measures guest↔guest networking on two datapaths in one
// run and prints them side by side:
//
//   - colibri: 'colibri up' with two guests on one netstack switch (their
//     virtio-net queues served by a polling thread);
//   - qemu-vhost: the usual kernel path, the same two guests under QEMU with
//     KVM, virtio-net-pci with vhost-net on two TAPs joined by a Linux
//     bridge.
//
// Both sides boot the same kernel, initrd and command line. Guest a pings b
// back to back (ping -A; -warmup pings first, reported apart as their p90)
// and then fetches a file of random data from b's
// httpd over TCP; the table gives the ping RTT p50/p99 (as ping prints it),
// the TCP throughput (host clock between console marks around the
// transfer), and VM exits per 1,000 packets in each phase: every exit KVM
// counted for both VMs (debugfs, the same source for both VMMs) between the
// marks, divided by the packets guest a's driver sent and received (and,
// for TCP, by the MiB moved: a side whose NIC offers TSO/GRO moves the same
// bytes in far fewer, larger packets).
//
// The sides alternate for -runs rounds (3 by default), each round in the
// other order than the one before (-order); after the table of
// every run comes a summary: per side, each figure's median and spread
// (min–max over the runs that finished), and which side's median is
// better. -all-counters adds, per run and phase, every KVM counter that
// moved and the host scheduler's: the time tasks ran and waited on a run
// queue (all of them, and the VMM's own threads, QEMU's vhost workers
// included), per 1,000 packets, next to the phase's wall time.
//
//	go run ./scripts/netbench [-colibri bin/colibri] [-qemu qemu-system-x86_64] \
//	    [-kernel K] [-initrd I] [-pings N] [-warmup W] [-mib M] [-runs R] \
//	    [-shmem-thp advise] [-poller-core C] [-poller-spin D] [-all-counters] \
//	    [-qemu-nic-opts ,OPTS]
//
// It needs root and a working /dev/kvm (inside scripts/kvm-sandbox here:
// 'make netbench').
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/colibrivm/colibri/internal/kvmdebugfs"
)

// guest addressing, the same on both sides.
const (
	macA, macB = "52:54:00:00:00:0a", "52:54:00:00:00:0b"
	ipA, ipB   = "10.0.0.1", "10.0.0.2"
)

type config struct {
	kernel, initrd, cmdline string
	memMiB, pings, mib      int
	warmup                  int // unmeasured pings before the measured ones
	timeout                 time.Duration
	// pollerCore, if >= 0, is a CPU kept for the datapath: colibri's
	// poller runs there and both sides' vCPUs run on the other CPUs.
	pollerCore int
	otherCPUs  string // taskset list of the CPUs but pollerCore
	otherList  []int  // the same CPUs
	// pollerSpin, if not empty, is colibri's pollers.spin.
	pollerSpin string
	// txNoticeDelay, if not empty, is colibri's pollers.tx_notice_delay.
	txNoticeDelay string
	// qemuNICOpts is appended to QEMU's -device virtio-net-pci,...
	qemuNICOpts string
}

// line is one console line of guest vm, with when the host read it.
type line struct {
	vm, text string
	at       time.Time
}

// mark is a point in guest a's script: the host's time and KVM counters
// when its console line arrived, and a's driver counters.
type mark struct {
	at     time.Time
	exits  kvmdebugfs.Counters
	tx, rx uint64
}

// result is one side's measurements.
type result struct {
	name        string
	rtts        []float64 // ms
	warmRTTs    []float64 // ms, the warm-up pings
	marks       map[string]mark
	bytes       int64
	err         error
	extraReport string
	clocksource string // guest a's, as its sysfs names it
}

func main() {
	os.Exit(run())
}

// run does the work of main and returns its exit status, after its
// deferred restores have run.
func run() int {
	var cfg config
	colibri := flag.String("colibri", "bin/colibri", "colibri binary ('' to skip its side)")
	qemu := flag.String("qemu", "qemu-system-x86_64", "QEMU binary for the vhost-net side ('' to skip)")
	flag.StringVar(&cfg.qemuNICOpts, "qemu-nic-opts", "", "more virtio-net-pci properties for QEMU's NICs, with a leading comma (e.g. ,modern-pio-notify=on)")
	flag.StringVar(&cfg.kernel, "kernel", "guestimages/out/vmlinuz", "guest bzImage (both sides)")
	flag.StringVar(&cfg.initrd, "initrd", "guestimages/out/initrd.img", "guest initrd with colibri's init (both sides)")
	flag.StringVar(&cfg.cmdline, "cmdline", "console=ttyS0 quiet panic=-1 nokaslr", "kernel command line, before the benchmark's colibri.run= (nokaslr: the vCPU instruction pointers colibri reports for a stalled guest resolve against the kernel's System.map)")
	flag.IntVar(&cfg.memMiB, "mem", 256, "guest memory in MiB")
	flag.IntVar(&cfg.pings, "pings", 1000, "back-to-back pings from a to b (p99 is then the 10th slowest)")
	flag.IntVar(&cfg.warmup, "warmup", 100, "back-to-back pings before the measured ones, reported apart (0: none)")
	flag.IntVar(&cfg.mib, "mib", 16, "MiB b serves to a over TCP")
	runs := flag.Int("runs", 3, "runs of each side, alternating (the summary gives medians and spreads)")
	order := flag.String("order", "alternate", "the sides' order in each round: alternate (colibri first in odd rounds, QEMU first in even ones, so neither always takes a fresh sandbox's first run) or fixed (colibri first in every round)")
	all := flag.Bool("all-counters", false, "also print every KVM counter that moved in the ping and TCP phases, and guest a's clocksource")
	shmemTHP := flag.String("shmem-thp", "", "set /sys/kernel/mm/transparent_hugepage/shmem_enabled to this for the run (e.g. advise: colibri's memfd guest memory gets THP, as QEMU's anonymous memory does by default); '' leaves it")
	flag.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "per side and run")
	flag.IntVar(&cfg.pollerCore, "poller-core", -1, "a CPU for the datapath: colibri's poller is pinned there and every vCPU (colibri's and QEMU's) runs on the other CPUs; QEMU's vhost threads go where the kernel puts them (-1: nothing pinned)")
	flag.StringVar(&cfg.txNoticeDelay, "tx-notice-delay", "", "colibri's pollers.tx_notice_delay: the longest its poller holds a guest's transmit-done interrupt back (e.g. 0, 3ms; '' is colibri's default)")
	flag.StringVar(&cfg.pollerSpin, "poller-spin", "", "colibri's pollers.spin: the longest its poller polls an idle datapath before it sleeps (e.g. 0, 1ms; '' is colibri's default)")
	flag.Parse() // -poller-spin is checked where the file is: by colibri up
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected argument %q (see -help)", flag.Arg(0)))
	}
	if *order != "alternate" && *order != "fixed" {
		fail(fmt.Errorf("-order %q: use alternate or fixed", *order))
	}
	if cfg.pings < 1 || cfg.mib < 1 || cfg.memMiB < 64 || *runs < 1 || cfg.warmup < 0 {
		fail(errors.New("-pings, -mib and -runs must be positive, -warmup not negative and -mem at least 64"))
	}
	if cfg.mib*2 > cfg.memMiB-64 {
		fail(fmt.Errorf("-mib %d does not fit in a %d MiB guest's tmpfs: raise -mem", cfg.mib, cfg.memMiB))
	}
	for _, f := range []*string{&cfg.kernel, &cfg.initrd} {
		if _, err := os.Stat(*f); err != nil {
			fail(fmt.Errorf("%w (run 'make images')", err))
		}
		abs, err := filepath.Abs(*f) // the up file is elsewhere
		if err != nil {
			fail(err)
		}
		*f = abs
	}
	if err := kvmdebugfs.Available(); err != nil {
		fail(err)
	}
	if cfg.pollerCore >= 0 {
		var others []string
		for c := 0; c < runtime.NumCPU(); c++ {
			if c != cfg.pollerCore {
				others = append(others, strconv.Itoa(c))
				cfg.otherList = append(cfg.otherList, c)
			}
		}
		if cfg.pollerCore >= runtime.NumCPU() || len(others) == 0 {
			fail(fmt.Errorf("-poller-core %d: this host has %d CPUs; it needs another for the vCPUs", cfg.pollerCore, runtime.NumCPU()))
		}
		cfg.otherCPUs = strings.Join(others, ",")
	}

	if *shmemTHP != "" {
		restore, err := setShmemTHP(*shmemTHP)
		if err != nil {
			fail(err)
		}
		defer restore()
	}
	fmt.Fprintf(os.Stderr, "netbench: transparent huge pages: anonymous %s, shared memory %s\n", thpMode("enabled"), thpMode("shmem_enabled"))

	type side struct {
		name string
		run  func(context.Context, config) result
	}
	var sides []side
	if *colibri != "" {
		sides = append(sides, side{"colibri", func(ctx context.Context, c config) result { return runColibri(ctx, c, *colibri) }})
	}
	if *qemu != "" {
		sides = append(sides, side{"qemu-vhost", func(ctx context.Context, c config) result { return runQEMU(ctx, c, *qemu) }})
	}
	if len(sides) == 0 {
		fail(errors.New("both sides skipped: nothing to run"))
	}
	var results []result
	for r := 1; r <= *runs; r++ {
		round := sides
		if *order == "alternate" && r%2 == 0 {
			round = slices.Clone(sides)
			slices.Reverse(round)
		}
		for _, s := range round {
			fmt.Fprintf(os.Stderr, "netbench: %s, run %d/%d ...\n", s.name, r, *runs)
			ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
			res := s.run(ctx, cfg)
			cancel()
			if res.err != nil {
				fmt.Fprintf(os.Stderr, "netbench: %s: %v\n", s.name, res.err)
			}
			results = append(results, res)
			fmt.Fprintf(os.Stderr, "netbench: %s\n", tableRow(res))
		}
	}
	printTable(os.Stdout, cfg, results)
	printSummary(os.Stdout, results)
	fmt.Fprintf(os.Stdout, "\nTransparent huge pages: anonymous memory (QEMU's guest RAM) %s, shared memory (colibri's memfd guest RAM) %s.\n", thpMode("enabled"), thpMode("shmem_enabled"))
	if *all {
		printCounters(os.Stdout, results)
	}
	for _, r := range results {
		if r.err != nil {
			return 1
		}
	}
	return 0
}

const thpDir = "/sys/kernel/mm/transparent_hugepage/"

// thpMode returns the selected mode of a THP setting ("[never]" -> never).
func thpMode(name string) string {
	b, err := os.ReadFile(thpDir + name)
	if err != nil {
		return "unknown"
	}
	s := string(b)
	if i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']'); i >= 0 && j > i {
		return s[i+1 : j]
	}
	return strings.TrimSpace(s)
}

// setShmemTHP sets shmem_enabled to mode and returns how to restore it.
func setShmemTHP(mode string) (func(), error) {
	old := thpMode("shmem_enabled")
	if err := os.WriteFile(thpDir+"shmem_enabled", []byte(mode), 0); err != nil {
		return nil, fmt.Errorf("-shmem-thp: %w", err)
	}
	return func() { _ = os.WriteFile(thpDir+"shmem_enabled", []byte(old), 0) }, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "netbench:", err)
	os.Exit(2)
}

// guestScripts returns the shell commands guests a and b run (colibri.run=,
// so without double quotes). a prints "nb MARK tx=N rx=N" lines around each
// phase; b serves until the file has left, then both power off.
// warmup is guest a's shell for n unmeasured pings, their times kept in
// /tmp/warm until the measured ones are done.
func warmup(n int) string {
	if n <= 0 {
		return ": > /tmp/warm"
	}
	return fmt.Sprintf("ping -A -c %d %s > /tmp/warm", n, ipB)
}

// donePort is where b waits for a to say it has the whole file;
// doneWait bounds that wait.
const (
	donePort = "81"
	doneWait = 20 * time.Minute
)

func guestScripts(c config) (a, b string) {
	setup := "ip link set eth0 up && ip addr add %s/24 dev eth0; "
	markFn := "nbmark() { echo nb $1 tx=$(cat /sys/class/net/eth0/statistics/tx_packets) rx=$(cat /sys/class/net/eth0/statistics/rx_packets); }; "
	a = fmt.Sprintf(setup, ipA) + markFn + strings.Join([]string{
		// Wait (bounded) for b's httpd: it starts once the file is written.
		"i=0; until wget -q -O /dev/null http://" + ipB + "/ready || [ $i -gt 300 ]; do sleep 1; i=$((i+1)); done",
		// Let b finish starting httpd before anything is measured.
		"sleep 1",
		// The clocksource decides what each clock read costs the guest
		// (kvm-clock and tsc: nothing; hpet, acpi_pm: an exit).
		"echo nb clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)",
		// Warm-up pings, reported apart: in the sandbox the first tens of
		// pings after colibri's poller starts spinning are slow
		// (docs/PERF.md, table 14). Nothing goes to the console between
		// them and the measured ones.
		warmup(c.warmup),
		"nbmark ping-start",
		// The host reads the counters at each mark, for a tenth of a
		// second or more in the sandbox: let it finish before the
		// measured work starts, and take the start time from nb go.
		"sleep 1; echo nb go",
		// Into a file: each console line would cost the guests tens of
		// UART exits inside the measured window.
		fmt.Sprintf("ping -A -c %d %s > /tmp/ping", c.pings, ipB),
		"nbmark ping-end",
		// Only the times, 50 to a line: ping's own lines would cost
		// the guest ~10x more UART exits, minutes for thousands of pings
		// in the sandbox.
		"sed -n 's/.* time=\\([0-9.]*\\) ms$/\\1/p' /tmp/ping | xargs -n 50 echo nbrtt",
		"sed -n 's/.* time=\\([0-9.]*\\) ms$/\\1/p' /tmp/warm | xargs -r -n 50 echo nbwarm",
		"nbmark tcp-start",
		"sleep 1; echo nb go",
		"wget -q -O /tmp/data http://" + ipB + "/data",
		"nbmark tcp-end",
		"echo nb got=$(wc -c < /tmp/data)",
		"echo done | nc -w 5 " + ipB + " " + donePort,
	}, "; ")
	b = fmt.Sprintf(setup, ipB) + strings.Join([]string{
		"mkdir /www; dd if=/dev/urandom of=/www/data bs=1M count=" + strconv.Itoa(c.mib) + " 2>/dev/null; touch /www/ready",
		"httpd -p 80 -h /www",
		// Serve until a says it has the file (bounded). b must not poll
		// meanwhile: both guests share the vCPUs' core, and each fork
		// and exec of a polling loop stalls a's pings for milliseconds.
		"timeout " + strconv.Itoa(int(doneWait.Seconds())) + " nc -l -p " + donePort + " > /dev/null",
	}, "; ")
	return a, b
}

// runColibri runs both guests in one 'colibri up'.
func runColibri(ctx context.Context, c config, bin string) result {
	res := result{name: "colibri"}
	dir, err := os.MkdirTemp("", "netbench")
	if err != nil {
		res.err = err
		return res
	}
	defer os.RemoveAll(dir)
	a, b := guestScripts(c)
	vm := func(name, mac, script string) map[string]any {
		return map[string]any{"name": name, "cpus": 1, "mem": fmt.Sprintf("%dM", c.memMiB),
			"kernel": c.kernel, "initrd": c.initrd, "cmdline": c.cmdline + ` colibri.run="` + script + `"`,
			"nics": []map[string]string{{"switch": "sw0", "mac": mac}}}
	}
	pollers := map[string]any{}
	if c.pollerCore >= 0 {
		// The scheduler's managed cores (the VMs' cpuset) default to
		// every other core.
		pollers["cores"] = []int{c.pollerCore}
	}
	if c.pollerSpin != "" {
		pollers["spin"] = c.pollerSpin
	}
	if c.txNoticeDelay != "" {
		pollers["tx_notice_delay"] = c.txNoticeDelay
	}
	up := map[string]any{
		"pollers":  pollers,
		"switches": []map[string]string{{"name": "sw0"}},
		"vms":      []any{vm("a", macA, a), vm("b", macB, b)},
	}
	file := filepath.Join(dir, "up.json")
	statsFile := filepath.Join(dir, "stats.json")
	data, _ := json.Marshal(up)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		res.err = err
		return res
	}
	cmd := command(ctx, bin, "up", file, "--stats-json", statsFile)
	cmd.Cancel = func() error {
		// Timed out: first have colibri print every VM's counters twice,
		// 5 s apart (SIGUSR1, to stderr), to tell a stalled guest (its
		// exits still move: halts, UART polling) from a stalled VMM.
		for i := range 2 {
			fmt.Fprintf(os.Stderr, "netbench: colibri timed out: its counters (%d of 2):\n", i+1)
			_ = cmd.Process.Signal(syscall.SIGUSR1)
			time.Sleep(5 * time.Second)
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 20 * time.Second
	lines := make(chan line, 256)
	var wg sync.WaitGroup
	if err := startWithConsole(cmd, "", lines, &wg); err != nil {
		res.err = err
		return res
	}
	go func() { wg.Wait(); close(lines) }()
	collect(&res, c, lines, func() kvmdebugfs.Counters {
		n := kvmdebugfs.Process(cmd.Process.Pid, nil)
		if n == nil {
			return nil // the VM is gone
		}
		hostCPU(n, []int{cmd.Process.Pid})
		return n
	})
	if err := cmd.Wait(); err != nil {
		res.err = fmt.Errorf("colibri up: %w (%v)", err, res.err)
	}
	res.extraReport = pollerReport(statsFile)
	return res
}

// pollerReport summarises the datapath's own counters from colibri's
// --stats-json file (whole run, both guests).
func pollerReport(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var st struct {
		VMs []struct {
			Name  string `json:"name"`
			Stats struct {
				NICs []map[string]any `json:"NICs"`
			} `json:"stats"`
		} `json:"vms"`
		Netstack struct {
			Pollers  []map[string]any `json:"pollers"`
			Switches []struct {
				Ports []struct {
					Name      string         `json:"name"`
					TxPackets uint64         `json:"tx_packets"`
					Held      uint64         `json:"held"`
					Drops     map[string]any `json:"drops"`
				} `json:"ports"`
			} `json:"switches"`
		} `json:"netstack"`
	}
	if json.Unmarshal(data, &st) != nil || len(st.Netstack.Pollers) == 0 {
		return ""
	}
	var extra []string
	for _, sw := range st.Netstack.Switches {
		for _, p := range sw.Ports {
			extra = append(extra, fmt.Sprintf("port %s: tx=%d held=%d no_room=%v expired=%v", p.Name, p.TxPackets, p.Held, p.Drops["no_room"], p.Drops["expired"]))
		}
	}
	for _, vm := range st.VMs {
		for _, n := range vm.Stats.NICs {
			extra = append(extra, fmt.Sprintf("vm %s nic: kicks=%v rx_interrupts=%v tx_interrupts=%v", vm.Name, n["kicks"], n["rx_interrupts"], n["tx_interrupts"]))
		}
	}
	keys := make([]string, 0, len(st.Netstack.Pollers[0]))
	for k := range st.Netstack.Pollers[0] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for i, p := range st.Netstack.Pollers {
		var kv []string
		for _, k := range keys {
			kv = append(kv, fmt.Sprintf("%s=%v", k, p[k]))
		}
		parts = append(parts, fmt.Sprintf("poller %d: %s", i, strings.Join(kv, " ")))
	}
	return strings.Join(append(parts, extra...), "\n")
}

// runQEMU runs each guest in its own QEMU with vhost-net on a TAP; the two
// TAPs are ports of one Linux bridge.
func runQEMU(ctx context.Context, c config, bin string) result {
	res := result{name: "qemu-vhost"}
	const bridge = "nbbr0"
	taps := []string{"nbtap0", "nbtap1"}
	cleanup := func() {
		for _, t := range taps {
			exec.Command("ip", "link", "del", t).Run()
		}
		exec.Command("ip", "link", "del", bridge).Run()
	}
	cleanup()
	defer cleanup()
	steps := [][]string{{"link", "add", bridge, "type", "bridge"}, {"link", "set", bridge, "up"}}
	for _, t := range taps {
		steps = append(steps, []string{"tuntap", "add", "dev", t, "mode", "tap", "vnet_hdr"},
			[]string{"link", "set", t, "master", bridge}, []string{"link", "set", t, "up"})
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			res.err = fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
			return res
		}
	}
	a, b := guestScripts(c)
	lines := make(chan line, 256)
	var wg sync.WaitGroup
	var cmds []*exec.Cmd
	for i, g := range []struct{ name, mac, script string }{{"a", macA, a}, {"b", macB, b}} {
		argv := []string{bin}
		if c.pollerCore >= 0 {
			argv = []string{"taskset", "-c", c.otherCPUs, bin}
		}
		cmd := command(ctx, argv[0], append(argv[1:], "-M", "pc", "-accel", "kvm", "-cpu", "host", "-smp", "1",
			"-m", fmt.Sprintf("%dM", c.memMiB), "-nodefaults", "-no-user-config", "-display", "none",
			"-monitor", "none", "-serial", "stdio", "-no-reboot",
			"-name", "netbench-"+g.name+",debug-threads=on", // vCPU threads named "CPU 0/KVM" (threadRole)
			"-kernel", c.kernel, "-initrd", c.initrd, "-append", c.cmdline+` colibri.run="`+g.script+`"`,
			"-netdev", "tap,id=n0,ifname="+taps[i]+",script=no,downscript=no,vhost=on",
			"-device", "virtio-net-pci,netdev=n0,mac="+g.mac+c.qemuNICOpts)...)
		if err := startWithConsole(cmd, g.name, lines, &wg); err != nil {
			res.err = err
			for _, c := range cmds {
				c.Cancel()
				c.Wait()
			}
			return res
		}
		cmds = append(cmds, cmd)
	}
	go func() { wg.Wait(); close(lines) }()
	collect(&res, c, lines, func() kvmdebugfs.Counters {
		sum := kvmdebugfs.Counters{}
		var pids []int
		for _, cmd := range cmds {
			sum.Add(kvmdebugfs.Process(cmd.Process.Pid, nil))
			pids = append(pids, cmd.Process.Pid)
		}
		hostCPU(sum, pids)
		return sum
	})
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			res.err = fmt.Errorf("qemu (guest %s): %w (%v)", []string{"a", "b"}[i], err, res.err)
		}
	}
	return res
}

// command prepares argv in its own process group, killed with the group
// when ctx ends.
func command(ctx context.Context, argv0 string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv0, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// startWithConsole starts cmd and sends its stdout lines to lines, tagged
// with vm ("" means the lines carry colibri up's "name| " prefix). stderr
// goes to ours.
func startWithConsole(cmd *exec.Cmd, vm string, lines chan<- line, wg *sync.WaitGroup) error {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := line{vm: vm, text: strings.TrimRight(sc.Text(), "\r"), at: time.Now()}
			if vm == "" {
				name, rest, ok := strings.Cut(l.text, "| ")
				if !ok {
					continue
				}
				l.vm, l.text = name, rest
			}
			lines <- l
		}
		io.Copy(io.Discard, out)
	}()
	return nil
}

var (
	rttRe   = regexp.MustCompile(`^nbrtt( [0-9.]+)+$`)
	warmRe  = regexp.MustCompile(`^nbwarm( [0-9.]+)+$`)
	markRe  = regexp.MustCompile(`^nb ([a-z-]+) tx=(\d+) rx=(\d+)$`)
	gotRe   = regexp.MustCompile(`^nb got=\s*(\d+)$`)
	clockRe = regexp.MustCompile(`^nb clocksource=(\S*)$`)
	goRe    = regexp.MustCompile(`^nb go$`)
)

// collect reads guest a's console until every console has closed, noting
// RTTs and marks (with the KVM counters read when each mark arrived).
// With -v set in the environment (NETBENCH_VERBOSE=1) it echoes every line.
func collect(res *result, c config, lines <-chan line, exits func() kvmdebugfs.Counters) {
	exits, stop := offDatapath(c.otherList, exits)
	defer stop()
	res.marks = map[string]mark{}
	lastMark := ""
	verbose := os.Getenv("NETBENCH_VERBOSE") == "1"
	for l := range lines {
		if verbose {
			fmt.Fprintf(os.Stderr, "%s %s| %s\n", res.name, l.vm, l.text)
		}
		if l.vm != "a" {
			continue
		}
		if m := markRe.FindStringSubmatch(l.text); m != nil {
			tx, _ := strconv.ParseUint(m[2], 10, 64)
			rx, _ := strconv.ParseUint(m[3], 10, 64)
			t0 := time.Now()
			res.marks[m[1]] = mark{at: l.at, exits: exits(), tx: tx, rx: rx}
			lastMark = m[1]
			if verbose {
				fmt.Fprintf(os.Stderr, "netbench: %s: counters at %s read in %v\n", res.name, m[1], time.Since(t0).Round(time.Microsecond))
			}
			continue
		}
		if goRe.MatchString(l.text) {
			// The phase opened by the last mark starts now; its counters
			// stay those read at the mark (they add a guest idle second).
			if m, ok := res.marks[lastMark]; ok {
				m.at = l.at
				res.marks[lastMark] = m
			}
			continue
		}
		if m := clockRe.FindStringSubmatch(l.text); m != nil {
			res.clocksource = m[1]
			continue
		}
		if m := gotRe.FindStringSubmatch(l.text); m != nil {
			res.bytes, _ = strconv.ParseInt(m[1], 10, 64)
			continue
		}
		if rttRe.MatchString(l.text) {
			res.rtts = appendRTTs(res.rtts, l.text)
		}
		if warmRe.MatchString(l.text) {
			res.warmRTTs = appendRTTs(res.warmRTTs, l.text)
		}
	}
	switch {
	case res.marks["tcp-end"].at.IsZero():
		res.err = errors.New("guest a never finished the transfer (run with NETBENCH_VERBOSE=1 to see the consoles)")
	case res.bytes != int64(c.mib)<<20:
		res.err = fmt.Errorf("guest a received %d bytes, want %d", res.bytes, int64(c.mib)<<20)
	case len(res.rtts) < c.pings:
		res.err = fmt.Errorf("%d of %d pings answered", len(res.rtts), c.pings)
	}
}

// appendRTTs appends the round-trip times (ms) of an "nbrtt T1 T2 ..."
// line to rtts.
func appendRTTs(rtts []float64, text string) []float64 {
	for _, f := range strings.Fields(text)[1:] {
		if v, err := strconv.ParseFloat(f, 64); err == nil {
			rtts = append(rtts, v)
		}
	}
	return rtts
}

// phase is what happened between two marks.
type phase struct {
	dur     time.Duration
	packets uint64
	exits   kvmdebugfs.Counters
}

func (r result) phase(from, to string) (phase, bool) {
	a, okA := r.marks[from]
	b, okB := r.marks[to]
	if !okA || !okB || a.exits == nil || b.exits == nil {
		return phase{}, false
	}
	return phase{dur: b.at.Sub(a.at), packets: (b.tx - a.tx) + (b.rx - a.rx), exits: b.exits.Sub(a.exits)}, true
}

// per1k formats n per 1,000 packets.
func per1k(n, packets uint64) string {
	if packets == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(n)*1000/float64(packets))
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted)) + 0.5)
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func printTable(w io.Writer, c config, rs []result) {
	fmt.Fprintf(w, "\nnetbench: two 1-vCPU %d MiB guests, same kernel, initrd and command line; %d back-to-back pings a→b (after %d unmeasured warm-up pings), then %d MiB b→a over TCP (busybox httpd → wget).\n", c.memMiB, c.pings, c.warmup, c.mib)
	fmt.Fprintf(w, "Times: wall clock where this ran. Exits: KVM debugfs, both VMs, between console marks, per 1,000 packets guest a sent+received\n")
	fmt.Fprintf(w, "(all exits, including kicks that KVM hands to an ioeventfd without leaving the kernel).\n\n")
	fmt.Fprintln(w, "| datapath | RTT p50 | RTT p99 | TCP | ping: pkts | exits/1k | halts/1k | irq inj/1k | TCP: pkts | exits/1k | halts/1k | irq inj/1k | exits/MiB | note |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Fprintln(w, tableRow(r))
	}
	for _, r := range rs {
		if r.extraReport != "" {
			fmt.Fprintf(w, "\n%s datapath counters (whole run): %s\n", r.name, r.extraReport)
		}
	}
}

// tableRow is run r's row of the table, also printed as each run ends so
// that a run the sandbox does not survive keeps the ones before it.
func tableRow(r result) string {
	rtts := slices.Clone(r.rtts)
	slices.Sort(rtts)
	cols := []string{r.name, "-", "-", "-"}
	if len(rtts) > 0 {
		cols[1] = fmt.Sprintf("%.3f ms", percentile(rtts, 0.50))
		cols[2] = fmt.Sprintf("%.3f ms", percentile(rtts, 0.99))
	}
	tcp, tcpOK := r.phase("tcp-start", "tcp-end")
	if tcpOK && tcp.dur > 0 && r.bytes > 0 {
		cols[3] = fmt.Sprintf("%.1f MiB/s", float64(r.bytes)/(1<<20)/tcp.dur.Seconds())
	}
	ping, pingOK := r.phase("ping-start", "ping-end")
	for _, ph := range []struct {
		p   phase
		ok  bool
		tcp bool
	}{{ping, pingOK, false}, {tcp, tcpOK, true}} {
		if !ph.ok {
			n := 4
			if ph.tcp {
				n = 5
			}
			for range n {
				cols = append(cols, "-")
			}
			continue
		}
		e := ph.p.exits
		cols = append(cols, strconv.FormatUint(ph.p.packets, 10), per1k(e["exits"], ph.p.packets),
			per1k(e["halt_exits"], ph.p.packets), per1k(e["irq_injections"], ph.p.packets))
		if ph.tcp {
			cols = append(cols, "-")
			if r.bytes > 0 {
				cols[len(cols)-1] = fmt.Sprintf("%.0f", float64(e["exits"])/(float64(r.bytes)/(1<<20)))
			}
		}
	}
	note := ""
	if r.err != nil {
		note = r.err.Error()
	}
	cols = append(cols, note)
	return "| " + strings.Join(cols, " | ") + " |"
}

// printCounters prints, per run and phase, every KVM counter that moved,
// per 1,000 packets, and guest a's clocksource.
func printCounters(w io.Writer, rs []result) {
	for _, r := range rs {
		fmt.Fprintf(w, "\n%s, slowest pings (ms, by sequence number from 1): %s\n", r.name, slowest(r.rtts, 5))
		for _, p := range []struct{ name, from, to string }{{"ping", "ping-start", "ping-end"}, {"TCP", "tcp-start", "tcp-end"}} {
			ph, ok := r.phase(p.from, p.to)
			if !ok {
				continue
			}
			names := make([]string, 0, len(ph.exits))
			for k, v := range ph.exits {
				if v > 0 {
					names = append(names, k)
				}
			}
			slices.Sort(names)
			var kv []string
			for _, k := range names {
				kv = append(kv, k+"="+per1k(ph.exits[k], ph.packets))
			}
			fmt.Fprintf(w, "\n%s (clocksource %s), %s phase, %s wall, KVM and scheduler counters per 1,000 packets: wall_ns=%s %s\n", r.name, r.clocksource, p.name, ph.dur.Round(time.Millisecond), per1k(uint64(ph.dur), ph.packets), strings.Join(kv, " "))
		}
	}
}

// slowest formats the n largest of rtts (in ping order) with their
// 1-based positions, largest first.
func slowest(rtts []float64, n int) string {
	idx := make([]int, len(rtts))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(rtts[b], rtts[a]) })
	var out []string
	for _, i := range idx[:min(n, len(idx))] {
		out = append(out, fmt.Sprintf("#%d %.1f", i+1, rtts[i]))
	}
	return strings.Join(out, ", ")
}

// figure is one number of a run, and whether less is better.
type figure struct {
	name, unit string
	lower      bool
	get        func(result) (float64, bool)
}

var figures = []figure{
	{"RTT p50", "ms", true, func(r result) (float64, bool) { return r.rttPercentile(0.50) }},
	{"RTT p99", "ms", true, func(r result) (float64, bool) { return r.rttPercentile(0.99) }},
	{"warm-up RTT p90", "ms", true, func(r result) (float64, bool) {
		if len(r.warmRTTs) == 0 {
			return 0, false
		}
		rtts := slices.Clone(r.warmRTTs)
		slices.Sort(rtts)
		return percentile(rtts, 0.90), true
	}},
	{"TCP", "MiB/s", false, func(r result) (float64, bool) {
		ph, ok := r.phase("tcp-start", "tcp-end")
		if !ok || ph.dur <= 0 || r.bytes <= 0 {
			return 0, false
		}
		return float64(r.bytes) / (1 << 20) / ph.dur.Seconds(), true
	}},
	{"ping exits/1k pkts", "", true, func(r result) (float64, bool) { return r.perK("ping-start", "ping-end", "exits") }},
	{"TCP exits/1k pkts", "", true, func(r result) (float64, bool) { return r.perK("tcp-start", "tcp-end", "exits") }},
	{"TCP exits/MiB", "", true, func(r result) (float64, bool) {
		ph, ok := r.phase("tcp-start", "tcp-end")
		if !ok || r.bytes <= 0 {
			return 0, false
		}
		return float64(ph.exits["exits"]) / (float64(r.bytes) / (1 << 20)), true
	}},
	{"ping irq inj/1k pkts", "", true, func(r result) (float64, bool) { return r.perK("ping-start", "ping-end", "irq_injections") }},
	{"TCP irq inj/1k pkts", "", true, func(r result) (float64, bool) { return r.perK("tcp-start", "tcp-end", "irq_injections") }},
}

// rttPercentile is the run's RTT percentile p, if it has RTTs.
func (r result) rttPercentile(p float64) (float64, bool) {
	if len(r.rtts) == 0 {
		return 0, false
	}
	rtts := slices.Clone(r.rtts)
	slices.Sort(rtts)
	return percentile(rtts, p), true
}

// perK is counter per 1,000 packets between two marks.
func (r result) perK(from, to, counter string) (float64, bool) {
	ph, ok := r.phase(from, to)
	if !ok || ph.packets == 0 {
		return 0, false
	}
	return float64(ph.exits[counter]) * 1000 / float64(ph.packets), true
}

// median returns the median of v (the mean of the middle two for an even
// count).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// printSummary prints, per side, every figure's median and spread over
// the runs that finished, and which side's median is better.
func printSummary(w io.Writer, rs []result) {
	var names []string
	vals := map[string]map[string][]float64{}
	for _, r := range rs {
		if _, ok := vals[r.name]; !ok {
			names = append(names, r.name)
			vals[r.name] = map[string][]float64{}
		}
		if r.err != nil {
			continue
		}
		for _, f := range figures {
			if v, ok := f.get(r); ok {
				vals[r.name][f.name] = append(vals[r.name][f.name], v)
			}
		}
	}
	format := func(v float64) string {
		if v < 10 {
			return strconv.FormatFloat(v, 'f', 3, 64)
		}
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	fmt.Fprintf(w, "\nSummary: median (min–max) over each side's finished runs")
	for _, n := range names {
		fmt.Fprintf(w, "; %s %d of %d", n, len(vals[n][figures[0].name]), countRuns(rs, n))
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintln(w)
	head := "| figure |"
	rule := "|---|"
	for _, n := range names {
		head += " " + n + " |"
		rule += "---|"
	}
	if len(names) == 2 {
		head += " better |"
		rule += "---|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, rule)
	for _, f := range figures {
		row := "| " + f.name
		if f.unit != "" {
			row += " (" + f.unit + ")"
		}
		row += " |"
		meds := make([]float64, len(names))
		ok := true
		for i, n := range names {
			v := vals[n][f.name]
			if len(v) == 0 {
				row += " - |"
				ok = false
				continue
			}
			meds[i] = median(v)
			row += fmt.Sprintf(" %s (%s–%s) |", format(meds[i]), format(slices.Min(v)), format(slices.Max(v)))
		}
		if len(names) == 2 {
			switch {
			case !ok:
				row += " - |"
			case meds[0] == meds[1]:
				row += " tie |"
			case (meds[0] < meds[1]) == f.lower:
				row += fmt.Sprintf(" %s by %.0f%% |", names[0], 100*ratio(meds[0], meds[1], f.lower))
			default:
				row += fmt.Sprintf(" %s by %.0f%% |", names[1], 100*ratio(meds[1], meds[0], f.lower))
			}
		}
		fmt.Fprintln(w, row)
	}
}

// ratio is how much better a is than b, as a fraction of b.
func ratio(a, b float64, lower bool) float64 {
	if b == 0 {
		return 0
	}
	if lower {
		return (b - a) / b
	}
	return (a - b) / b
}

func countRuns(rs []result, name string) int {
	n := 0
	for _, r := range rs {
		if r.name == name {
			n++
		}
	}
	return n
}
