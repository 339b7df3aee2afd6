package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/colibrivm/colibri/exp"
	"github.com/colibrivm/colibri/internal/clilog"
	"github.com/colibrivm/colibri/sched"
)

type expFlags struct {
	out, images, initrd, clientCPUs string
	bootTimeout                     time.Duration
	verbose                         bool
}

func newExpCmd() *cobra.Command {
	var f expFlags
	cmd := &cobra.Command{
		Use:   "exp FILE",
		Short: "Run a scheduling experiment: real LC and batch guests under each policy, with a report",
		Long: `exp runs the experiment FILE declares: an up file (pollers, sched, switches,
vms) plus an experiment section naming the policies to compare (a list value
of a parameter is a sweep), the LC workloads (sockperf server in a guest,
sockperf under-load as an open-loop client on this host or in a guest), the
batch workloads (stress-ng in a guest), durations and repeats.

The VMs boot once and the policy changes live between phases (boot: once), or
they boot afresh for every phase (boot: per-policy). Every repeat starts with
an isolated run (the LC work alone: batch VMs paused, same cores and
scheduler thread) unless isolated: none. A repeat whose isolated run is worse
than a colocated phase is flagged as a failed measurement.

Output (--out): results.json, report.md with its tables and SVG plots
(latency CDF per phase, batch throughput, per-core timelines) and raw/ (the
clients' per-message logs). A progress line shows what runs.

FILE:

  pollers: {cores: [0]}
  sched: {cores: [1], cpu: 0, mode: sleep, period: 1ms}
  switches: [{name: sw0, uplinks: [{tap: colexp0}]}]
  vms:
    - {name: server, class: lc, nics: [{switch: sw0}]}
    - {name: batch, class: batch}
  experiment:
    boot: once                 # once | per-policy
    repeats: 3
    warmup: 2s
    duration: 5s               # whole seconds (sockperf's -t)
    isolated: pinned           # none: no isolated run
    policies: [linux, pinned, {policy: central, threshold: [500us, 1ms]}]
    lc: [{server: server, client: host, mps: 2000, msg_size: 64}]
    batch: [{vm: batch, args: "--cpu 1"}]
    timeline: {rate: 1000, seconds: 2}

VMs that name no kernel boot the images' vmlinux with initrd-pkgs.img
(guestimages/build.sh --pkgs "sockperf stress-ng", or make images).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runExp(cmd, args[0], f) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "out", "o", "", "output `DIR` (default exp-NAME-TIME in the current directory)")
	fl.StringVar(&f.images, "images", "", "guest images `DIR` (default $COLIBRI_IMAGES or guestimages/out)")
	fl.StringVar(&f.initrd, "initrd", "", "initrd for VMs that name no kernel (default IMAGES/initrd-pkgs.img)")
	fl.StringVar(&f.clientCPUs, "client-cpus", "", "CPUs of a client on this host, like 0 or 0-1 (default: the pollers' cores)")
	fl.DurationVar(&f.bootTimeout, "boot-timeout", 10*time.Minute, "how long each guest may take to boot")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log what the VMM does (to stderr)")
	return cmd
}

func runExp(cmd *cobra.Command, path string, f expFlags) error {
	file, err := exp.Load(path)
	if err != nil {
		return err
	}
	opts := exp.Options{OutDir: f.out, Progress: cmd.ErrOrStderr(), Logger: clilog.New(f.verbose, os.Stderr),
		BootTimeout: f.bootTimeout, Cmdline: defaultCmdline}
	if opts.OutDir == "" {
		name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		opts.OutDir = fmt.Sprintf("exp-%s-%s", name, time.Now().Format("20060102-150405"))
	}
	if f.clientCPUs != "" {
		if opts.ClientCPUs, err = sched.ParseCPUList(f.clientCPUs); err != nil {
			return fmt.Errorf("--client-cpus: %w", err)
		}
	}
	if needsDefaultKernel(file) {
		dir := f.images
		if dir == "" {
			if dir, err = defaultImages(); err != nil {
				return err
			}
		}
		opts.Kernel = filepath.Join(dir, "vmlinux")
		if _, err := os.Stat(opts.Kernel); err != nil {
			opts.Kernel = filepath.Join(dir, "vmlinuz")
		}
		opts.Initrd = f.initrd
		if opts.Initrd == "" {
			opts.Initrd = filepath.Join(dir, "initrd-pkgs.img")
		}
		if err := checkReadable("kernel", opts.Kernel); err != nil {
			return err
		}
		if err := checkReadable("initrd", opts.Initrd); err != nil {
			return fmt.Errorf("%w (the experiment's guests need sockperf and stress-ng: make images GUEST_PKGS=\"sockperf stress-ng\", or guestimages/build.sh --pkgs \"sockperf stress-ng\" --out DIR and --images DIR)", err)
		}
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := exp.Run(ctx, file, path, opts)
	if res != nil {
		fmt.Fprintf(cmd.OutOrStdout(), "exp: %d phase runs; results in %s (report.md, results.json)\n", len(res.Runs), opts.OutDir)
		if res.Failed {
			fmt.Fprintln(cmd.OutOrStdout(), "exp: FAILED MEASUREMENT: every repeat's isolated run was worse than a colocated one")
		}
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("interrupted: %w", err)
	}
	return err
}

// needsDefaultKernel reports whether a VM of the file names no kernel.
func needsDefaultKernel(f *exp.File) bool {
	for _, v := range f.Host.VMs {
		if v.Kernel == "" {
			return true
		}
	}
	return false
}
