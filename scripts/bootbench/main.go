// Command bootbench boots the same kernel and initrd with several VMMs, one
// after the other in one run, and prints a table: wall time to the guest's
// banner line and to the end of the run, and VM exits by reason as KVM counts
// them (from /sys/kernel/debug/kvm/<pid>-<fd>/, the same source for every
// VMM).
//
//	go run ./scripts/bootbench -kernel K -initrd I [-cpus N] [-mem M] [-runs R] \
//	    [-colibri bin/colibri] [-gokvm PATH] [-qemu qemu-system-x86_64]
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

func main() {
	kernel := flag.String("kernel", "guestimages/out/vmlinuz", "bzImage")
	initrd := flag.String("initrd", "guestimages/out/initrd.img", "initrd")
	cpus := flag.Int("cpus", 1, "vCPUs")
	mem := flag.Int("mem", 512, "guest memory in MiB")
	runs := flag.Int("runs", 1, "boots per VMM")
	colibri := flag.String("colibri", "bin/colibri", "colibri binary ('' to skip)")
	gokvm := flag.String("gokvm", "", "gokvm binary ('' to skip)")
	qemu := flag.String("qemu", "", "qemu-system-x86_64 binary for a microvm peer ('' to skip)")
	variant := flag.String("colibri-variant", "", "extra kernel arguments for a second colibri run (e.g. pci=noearly); '' to skip")
	vmlinux := flag.String("colibri-vmlinux", "", "the same kernel as an uncompressed ELF vmlinux, for a third colibri run; '' to skip")
	banner := flag.String("banner", "colibri-guest: up", "console text that marks the guest's init")
	end := flag.String("end", "colibri-guest: exit status", "console text after which a VMM that cannot power off is stopped")
	timeout := flag.Duration("timeout", 10*time.Minute, "per boot")
	cmdline := flag.String("cmdline", "console=ttyS0 quiet panic=-1", "kernel command line for colibri and QEMU")
	gokvmCmdline := flag.String("gokvm-cmdline", "console=ttyS0 quiet panic=-1 noapic noacpi notsc lapic tsc_early_khz=2000", "kernel command line for gokvm (it has no ACPI)")
	flag.Parse()

	run := `colibri.run="true"`
	type vmm struct {
		name string
		argv []string
	}
	var vmms []vmm
	if *colibri != "" {
		vmms = append(vmms, vmm{"colibri", []string{*colibri, "boot", "--kernel", *kernel, "--initrd", *initrd,
			"--cpus", strconv.Itoa(*cpus), "--mem", fmt.Sprintf("%dM", *mem), "--no-rng", "--cmdline", *cmdline + " " + run}})
	}
	if *colibri != "" && *variant != "" {
		vmms = append(vmms, vmm{"colibri " + *variant, []string{*colibri, "boot", "--kernel", *kernel, "--initrd", *initrd,
			"--cpus", strconv.Itoa(*cpus), "--mem", fmt.Sprintf("%dM", *mem), "--no-rng", "--cmdline", *cmdline + " " + *variant + " " + run}})
	}
	if *colibri != "" && *vmlinux != "" {
		vmms = append(vmms, vmm{"colibri vmlinux", []string{*colibri, "boot", "--kernel", *vmlinux, "--initrd", *initrd,
			"--cpus", strconv.Itoa(*cpus), "--mem", fmt.Sprintf("%dM", *mem), "--no-rng", "--cmdline", *cmdline + " " + run}})
	}
	if *gokvm != "" {
		vmms = append(vmms, vmm{"gokvm", []string{*gokvm, "boot", "-k", *kernel, "-i", *initrd,
			"-c", strconv.Itoa(*cpus), "-m", fmt.Sprintf("%dM", *mem), "-p", *gokvmCmdline + " " + run}})
	}
	if *qemu != "" {
		vmms = append(vmms, vmm{"qemu-microvm", []string{*qemu, "-M", "microvm,acpi=on", "-accel", "kvm", "-cpu", "host",
			"-smp", strconv.Itoa(*cpus), "-m", fmt.Sprintf("%dM", *mem), "-nodefaults", "-no-user-config", "-nographic",
			"-serial", "stdio", "-no-reboot", "-kernel", *kernel, "-initrd", *initrd, "-append", *cmdline + " " + run}})
	}
	if len(vmms) == 0 {
		fmt.Fprintln(os.Stderr, "bootbench: no VMM to run")
		os.Exit(2)
	}
	if err := kvmdebugfs.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: no exit counts: %v\n", err)
	}
	var results []result
	for r := 0; r < *runs; r++ {
		for _, v := range vmms {
			fmt.Fprintf(os.Stderr, "bootbench: %s run %d/%d ...\n", v.name, r+1, *runs)
			res := boot(v.name, v.argv, *banner, *end, *timeout)
			fmt.Fprintf(os.Stderr, "bootbench: %s: banner %v, done %v %s\n", v.name, res.banner.Round(time.Millisecond), res.done.Round(time.Millisecond), res.note)
			results = append(results, res)
		}
	}
	printTable(os.Stdout, results, *cpus, *mem)
}

// boot runs one VMM until it exits or prints end, following its KVM stats.
func boot(name string, argv []string, banner, end string, timeout time.Duration) result {
	res := result{name: name, exits: kvmdebugfs.Counters{}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = nil
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
			if s := kvmdebugfs.Process(cmd.Process.Pid, counters); len(s) > 0 {
				mu.Lock()
				res.exits = s
				mu.Unlock()
			}
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
		if strings.Contains(line, end) {
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

func printTable(w io.Writer, rs []result, cpus, mem int) {
	fmt.Fprintf(w, "\nboot: %d vCPU, %d MiB, same kernel and initrd; times are wall clock where this ran; exits from KVM debugfs\n\n", cpus, mem)
	fmt.Fprintf(w, "| VMM | to guest banner | to end | %s | note |\n", strings.Join(counters, " | "))
	fmt.Fprintf(w, "|---|---|---|%s---|\n", strings.Repeat("---|", len(counters)))
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].name < rs[j].name })
	for _, r := range rs {
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
