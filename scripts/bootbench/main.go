// Command bootbench boots the same kernel and initrd with several VMMs, one
// after the other in each of -runs rounds, and prints a table: wall time
// from starting the VMM's process to the guest's banner line (its init's
// first line) and to the end of the run, and VM exits by reason as KVM
// counts them (from /sys/kernel/debug/kvm/<pid>-<fd>/, the same source for
// every VMM), each run and the median per VMM.
//
//	go run ./scripts/bootbench -kernel K -initrd I [-cpus N] [-mem M] [-runs R] \
//	    [-colibri bin/colibri] [-colibri-vmlinux V] [-colibri-cold] \
//	    [-colibri-guest-decompress BIN] [-gokvm PATH] [-qemu qemu-system-x86_64]
//
// colibri gets -cmdline plus its default arguments (boot.DefaultArgs), the
// way `colibri boot` adds them; QEMU gets -qemu-cmdline. colibri runs with
// XDG_CACHE_HOME in a directory of bootbench's own, so its cache of
// decompressed kernels starts empty: -colibri-cold adds a row whose cache
// is emptied before every run, and the plain bzImage row runs after a
// filled cache (a warm-up boot fills it when there is no cold row).
//
// Run it where /dev/kvm works (inside scripts/kvm-sandbox here).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/colibrivm/colibri/internal/kvmdebugfs"
	"github.com/colibrivm/colibri/vmm/boot"
)

// counters are the KVM stats shown in the table.
var counters = []string{"exits", "io_exits", "mmio_exits", "halt_exits", "irq_exits", "irq_injections", "insn_emulation"}

type result struct {
	name         string
	banner, done time.Duration
	ok           bool
	exits        kvmdebugfs.Counters
	note         string
}

// vmm is one row of the table: how to start it, and what to do before each
// run.
type vmm struct {
	name   string
	argv   []string
	env    []string
	before func() error
	// powersOff: the VMM ends by itself when the guest powers off, and
	// is waited for (colibri finishes its kernel cache fill before it
	// exits); the others are stopped a moment after the guest's last line.
	powersOff bool
}

func main() {
	kernel := flag.String("kernel", "guestimages/out/vmlinuz", "bzImage")
	initrd := flag.String("initrd", "guestimages/out/initrd.img", "initrd")
	cpus := flag.Int("cpus", 1, "vCPUs")
	mem := flag.Int("mem", 512, "guest memory in MiB")
	runs := flag.Int("runs", 1, "boots per VMM (the VMMs alternate, one round at a time)")
	colibri := flag.String("colibri", "bin/colibri", "colibri binary ('' to skip)")
	cold := flag.Bool("colibri-cold", false, "add a colibri bzImage row whose cache of decompressed kernels is emptied before every run")
	guestDecomp := flag.String("colibri-guest-decompress", "", "a colibri binary that leaves the bzImage to the guest's decompressor (e.g. one built before host decompression), for a row of its own; '' to skip")
	defaults := flag.Bool("colibri-defaults", true, "add colibri's default kernel arguments (boot.DefaultArgs) to -cmdline for colibri")
	gokvm := flag.String("gokvm", "", "gokvm binary ('' to skip)")
	qemu := flag.String("qemu", "", "qemu-system-x86_64 binary for a microvm peer ('' to skip)")
	variant := flag.String("colibri-variant", "", "extra kernel arguments for another colibri bzImage row (e.g. iommu=noaperture); '' to skip")
	vmlinux := flag.String("colibri-vmlinux", "", "the same kernel as an uncompressed ELF vmlinux, for a colibri row of its own; '' to skip")
	banner := flag.String("banner", "colibri-guest: up", "console text that marks the guest's init")
	end := flag.String("end", "colibri-guest: exit status", "console text after which a VMM that cannot power off is stopped")
	timeout := flag.Duration("timeout", 10*time.Minute, "per boot")
	cmdline := flag.String("cmdline", "console=ttyS0 quiet", "kernel command line for colibri (before its defaults)")
	qemuCmdline := flag.String("qemu-cmdline", "console=ttyS0 quiet rdinit=/init", "kernel command line for QEMU")
	gokvmCmdline := flag.String("gokvm-cmdline", "console=ttyS0 quiet panic=-1 noapic noacpi notsc lapic tsc_early_khz=2000 colibri.bootmark=off", "kernel command line for gokvm (it has no ACPI, and stops on an MMIO write to colibri's boot-timer address)")
	flag.Parse()

	run := `colibri.run="true"`
	ccmd := *cmdline
	if *defaults {
		ccmd = boot.DefaultArgs(ccmd)
	}
	ccmd += " " + run
	cacheHome, err := os.MkdirTemp("", "bootbench-cache-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: %v\n", err)
		os.Exit(1)
	}
	defer os.RemoveAll(cacheHome)
	cenv := []string{"XDG_CACHE_HOME=" + cacheHome}
	emptyCache := func() error {
		if err := os.RemoveAll(cacheHome); err != nil {
			return err
		}
		return os.Mkdir(cacheHome, 0o755)
	}
	colibriArgv := func(bin, kernel, cmd string) []string {
		return []string{bin, "boot", "--kernel", kernel, "--initrd", *initrd,
			"--cpus", strconv.Itoa(*cpus), "--mem", fmt.Sprintf("%dM", *mem), "--no-rng", "--cmdline", cmd}
	}
	var vmms []vmm
	if *colibri != "" && *cold {
		vmms = append(vmms, vmm{name: "colibri bzImage, cold cache", argv: colibriArgv(*colibri, *kernel, ccmd), env: cenv, before: emptyCache, powersOff: true})
	}
	if *colibri != "" {
		vmms = append(vmms, vmm{name: "colibri bzImage", argv: colibriArgv(*colibri, *kernel, ccmd), env: cenv, powersOff: true})
	}
	if *colibri != "" && *variant != "" {
		vmms = append(vmms, vmm{name: "colibri bzImage " + *variant, argv: colibriArgv(*colibri, *kernel, *variant+" "+ccmd), env: cenv, powersOff: true})
	}
	if *colibri != "" && *vmlinux != "" {
		vmms = append(vmms, vmm{name: "colibri vmlinux", argv: colibriArgv(*colibri, *vmlinux, ccmd), env: cenv, powersOff: true})
	}
	if *guestDecomp != "" {
		vmms = append(vmms, vmm{name: "colibri bzImage, guest decompressor", argv: colibriArgv(*guestDecomp, *kernel, ccmd), env: cenv, powersOff: true})
	}
	if *gokvm != "" {
		vmms = append(vmms, vmm{name: "gokvm", argv: []string{*gokvm, "boot", "-k", *kernel, "-i", *initrd,
			"-c", strconv.Itoa(*cpus), "-m", fmt.Sprintf("%dM", *mem), "-p", *gokvmCmdline + " " + run}})
	}
	if *qemu != "" {
		vmms = append(vmms, vmm{name: "qemu-microvm", argv: []string{*qemu, "-M", "microvm,acpi=on", "-accel", "kvm", "-cpu", "host",
			"-smp", strconv.Itoa(*cpus), "-m", fmt.Sprintf("%dM", *mem), "-nodefaults", "-no-user-config", "-nographic",
			"-serial", "stdio", "-no-reboot", "-kernel", *kernel, "-initrd", *initrd, "-append", *qemuCmdline + " " + run}})
	}
	if len(vmms) == 0 {
		fmt.Fprintln(os.Stderr, "bootbench: no VMM to run")
		os.Exit(2)
	}
	if err := kvmdebugfs.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: no exit counts: %v\n", err)
	}
	if *colibri != "" && !*cold {
		// Fill the cache, so that the bzImage rows measure a cached
		// kernel from the first round on.
		fmt.Fprintln(os.Stderr, "bootbench: colibri warm-up boot (fills its cache of decompressed kernels; not timed) ...")
		boot1("colibri warm-up", colibriArgv(*colibri, *kernel, ccmd), cenv, *banner, *end, *timeout, true)
	}
	var results []result
	for r := 0; r < *runs; r++ {
		for _, v := range vmms {
			if v.before != nil {
				if err := v.before(); err != nil {
					fmt.Fprintf(os.Stderr, "bootbench: %s: %v\n", v.name, err)
					os.Exit(1)
				}
			}
			fmt.Fprintf(os.Stderr, "bootbench: %s run %d/%d ...\n", v.name, r+1, *runs)
			res := boot1(v.name, v.argv, v.env, *banner, *end, *timeout, v.powersOff)
			fmt.Fprintf(os.Stderr, "bootbench: %s: banner %v, done %v %s\n", v.name, res.banner.Round(time.Millisecond), res.done.Round(time.Millisecond), res.note)
			results = append(results, res)
		}
	}
	fmt.Fprintf(os.Stdout, "\nboot: %d vCPU, %d MiB, same kernel and initrd; times are wall clock from starting the VMM where this ran; exits from KVM debugfs\n", *cpus, *mem)
	fmt.Fprintf(os.Stdout, "colibri command line: %s\nQEMU command line: %s\n\n", ccmd, *qemuCmdline+" "+run)
	var order []string
	for _, v := range vmms {
		order = append(order, v.name)
	}
	printTable(os.Stdout, results, order)
}

// boot1 runs one VMM until it exits or, unless powersOff, prints end,
// following its KVM stats.
func boot1(name string, argv, env []string, banner, end string, timeout time.Duration, powersOff bool) result {
	res := result{name: name, exits: kvmdebugfs.Counters{}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = nil
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		res.note = err.Error()
		return res
	}
	cmd.Stderr = io.Discard
	start := time.Now()
	if err := cmd.Start(); err != nil {
		res.note = err.Error()
		return res
	}
	var mu sync.Mutex
	stopPoll := make(chan struct{})
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			// The counters only grow: keep each one's highest reading,
			// so that a poll racing with the VM's end (a file gone,
			// or read as 0) loses nothing.
			s := kvmdebugfs.Process(cmd.Process.Pid, counters)
			mu.Lock()
			for k, v := range s {
				res.exits[k] = max(res.exits[k], v)
			}
			mu.Unlock()
			select {
			case <-stopPoll:
				return
			case <-t.C:
			}
		}
	}()
	sc := bufio.NewScanner(stdout)
	sawEnd := false
	for sc.Scan() {
		line := sc.Text()
		if res.banner == 0 && strings.Contains(line, banner) {
			res.banner = time.Since(start)
		}
		if strings.Contains(line, end) && !powersOff {
			sawEnd = true
			// Give a VMM that powers off a moment to do so by itself.
			go func() {
				time.Sleep(3 * time.Second)
				cmd.Cancel()
			}()
		}
	}
	err = cmd.Wait()
	res.done = time.Since(start)
	close(stopPoll)
	<-pollDone
	res.ok = res.banner > 0
	switch {
	case ctx.Err() != nil:
		res.note = "(timed out)"
	case err != nil && sawEnd:
		res.note = "(stopped after the guest's last line: it cannot power off)"
	case err != nil:
		res.note = "(" + err.Error() + ")"
	}
	return res
}

// printTable prints every run, grouped by VMM in order, then the median
// of each VMM's successful runs.
func printTable(w io.Writer, rs []result, order []string) {
	fmt.Fprintf(w, "| VMM | to guest banner | to end | %s | note |\n", strings.Join(counters, " | "))
	fmt.Fprintf(w, "|---|---|---|%s---|\n", strings.Repeat("---|", len(counters)))
	for _, name := range order {
		for _, r := range rs {
			if r.name != name {
				continue
			}
			b := "never"
			if r.ok {
				b = fmt.Sprintf("%.2f s", r.banner.Seconds())
			}
			var cs []string
			for _, c := range counters {
				cs = append(cs, strconv.FormatUint(r.exits[c], 10))
			}
			fmt.Fprintf(w, "| %s | %s | %.2f s | %s | %s |\n", r.name, b, r.done.Seconds(), strings.Join(cs, " | "), r.note)
		}
	}
	fmt.Fprintf(w, "\nMedians over the runs that reached the banner:\n\n")
	fmt.Fprintf(w, "| VMM | runs | to guest banner | to end | %s |\n", strings.Join(counters, " | "))
	fmt.Fprintf(w, "|---|---|---|---|%s\n", strings.Repeat("---|", len(counters)))
	for _, name := range order {
		var ok []result
		for _, r := range rs {
			if r.name == name && r.ok {
				ok = append(ok, r)
			}
		}
		if len(ok) == 0 {
			fmt.Fprintf(w, "| %s | 0 | never | | %s|\n", name, strings.Repeat(" |", len(counters)))
			continue
		}
		banner := median(ok, func(r result) float64 { return r.banner.Seconds() })
		done := median(ok, func(r result) float64 { return r.done.Seconds() })
		var cs []string
		for _, c := range counters {
			cs = append(cs, fmt.Sprintf("%.0f", median(ok, func(r result) float64 { return float64(r.exits[c]) })))
		}
		fmt.Fprintf(w, "| %s | %d | %.2f s | %.2f s | %s |\n", name, len(ok), banner, done, strings.Join(cs, " | "))
	}
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
