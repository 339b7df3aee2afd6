package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/clilog"
	"github.com/colibrivm/colibri/internal/exepages"
	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/vmm"
)

type upFlags struct {
	stats     bool
	statsJSON string
	verbose   bool
	confine   confineFlags
}

func newUpCmd() *cobra.Command {
	var f upFlags
	cmd := &cobra.Command{
		Use:   "up FILE",
		Short: "Run the VMs, switches and scheduler a YAML or JSON file declares",
		Long: `up starts everything FILE declares: the netstack pollers on their cores,
the switches with their uplinks (TAP devices, AF_XDP sockets), the VMs with
their NICs on those switches, and the central scheduler with its policy over
its managed cores (every vCPU registered under its VM's class; without a sched
section the policy is linux: no intervention).

Each guest's console goes to stdout, every line prefixed with "NAME| ", or to
the file its console field names. A stdout that blocks (a full pipe, a stopped
pager) never stalls a guest: what falls more than 256 KiB behind is dropped,
with a line saying how much. up runs until every VM has powered off, or
until Ctrl-C, and exits non-zero if any VM failed. SIGUSR1 prints the datapath
and scheduler counters, and where each vCPU is (its instruction pointer),
while it runs.

FILE (YAML; JSON with the same names works too):

  pollers: {cores: [1]}                 # host cores for the datapath
                                        # also: spin (longest idle poll before sleeping; 0: none),
                                        # tx_notice_delay (longest a guest's transmit-done
                                        # interrupt is held back, 1ms; 0: none)
  sched: {policy: central, cores: [0]}  # linux | pinned | central | adaptive
                                        # also: period (5us); central: threshold, quantum, grace
  switches:
    - name: sw0
      uplinks: [{tap: tap0}, {xdp: veth0}]   # both optional
  vms:
    - name: a
      kernel: path/bzImage              # default: the image from 'make images'
      initrd: path/initrd
      cmdline: "console=ttyS0 ..."
      cpus: 1
      mem: 256M
      class: lc                         # lc | batch
      disks: [{path: a.img, readonly: false}]  # also: on_error (report | stop)
      nics: [{switch: sw0, mac: "52:54:00:00:00:0a"}]  # also: offloads (true: checksum/TSO)`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runUp(cmd, args[0], f) },
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.stats, "stats", false, "print each VM's exits and the datapath and scheduler counters at exit (stderr)")
	fl.StringVar(&f.statsJSON, "stats-json", "", "write the counters as JSON to `FILE` at exit")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log what the VMM does (to stderr)")
	addConfineFlags(fl, &f.confine)
	return cmd
}

// upStats is what --stats-json writes.
type upStats struct {
	VMs      []upVMStats    `json:"vms"`
	Netstack netstack.Stats `json:"netstack"`
	Sched    *upSchedStats  `json:"sched,omitempty"`
	Uplinks  map[string]any `json:"uplinks,omitempty"`
}

type upVMStats struct {
	Name  string    `json:"name"`
	Exit  string    `json:"exit"`
	Error string    `json:"error,omitempty"`
	Stats vmm.Stats `json:"stats"`
}

type upSchedStats struct {
	Policy     string  `json:"policy"`
	Passes     uint64  `json:"passes"`
	Parks      uint64  `json:"parks"`
	Unparks    uint64  `json:"unparks"`
	Migrations uint64  `json:"migrations"`
	Errors     uint64  `json:"errors"`
	CPUTimeS   float64 `json:"cpu_time_s"`
}

// imagesKernel is the host's default kernel: the images 'make images'
// builds.
func imagesKernel() (string, string, error) { return resolveKernel("", "") }

// upStopTimeout is how long Ctrl-C or SIGTERM lets the guests shut down
// before they are forced off.
const upStopTimeout = 30 * time.Second

// upConsoleSync is how long up waits, once the guests have ended, for
// their last console lines to reach stdout.
const upConsoleSync = 2 * time.Second

func runUp(cmd *cobra.Command, path string, f upFlags) error {
	file, err := spec.Load(path)
	if err != nil {
		return err
	}
	confine, err := f.confine.confinement()
	if err != nil {
		return err
	}
	log := clilog.New(f.verbose, os.Stderr)
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()

	consoles := &lockedWriter{w: cmd.OutOrStdout()}
	var prefixed []*prefixWriter
	h, err := host.New(ctx, host.Config{
		Spec:           *file,
		DefaultKernel:  imagesKernel,
		DefaultCmdline: defaultCmdline,
		ConsoleSink: func(vm string) io.Writer {
			p := newPrefixWriter(consoles, vm+"| ")
			prefixed = append(prefixed, p)
			return p
		},
		StopTimeout: upStopTimeout,
		Logger:      log,
		Confine:     confine,
	})
	if err != nil {
		if e, ok := err.(*spec.Error); ok {
			e.File = path
		}
		return err
	}
	defer h.Close(context.Background())

	var vms []*host.VM
	for _, s := range file.VMs {
		v, err := h.CreateVM(s)
		if err != nil {
			return fmt.Errorf("vm %s: %w", s.Name, err)
		}
		vms = append(vms, v)
	}
	if err := f.confine.prepareOutput(f.statsJSON); err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	if err := h.DropPrivileges(); err != nil { // --user, once the VMs' files are open
		return err
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	var interrupted atomic.Bool
	go func() {
		for s := range sigs {
			if s == syscall.SIGUSR1 {
				printUpStats(os.Stderr, h.Stats())
				printRIPs(os.Stderr, vms)
				continue
			}
			// The first signal asks the guests to shut down, a second one
			// forces them off.
			force := interrupted.Swap(true)
			if !force {
				fmt.Fprintf(os.Stderr, "colibri: %v: stopping the VMs (again to force)\n", s)
			}
			for _, v := range vms {
				go v.Stop(ctx, host.StopOptions{Force: force})
			}
		}
	}()

	for _, v := range vms {
		if err := v.Start(); err != nil {
			return fmt.Errorf("vm %s: %w", v.Name(), err)
		}
	}
	exepages.ReleaseAndLog(log) // start-up is over: docs/PERF.md, "VMM memory overhead"
	for _, v := range vms {
		if _, err := v.Wait(ctx); err != nil {
			return fmt.Errorf("vm %s: %w", v.Name(), err)
		}
	}
	for _, v := range vms { // the last lines reach stdout before the stats
		sctx, cancel := context.WithTimeout(ctx, upConsoleSync)
		_ = v.Console().Sync(sctx) // a stdout that blocks costs only its lines
		cancel()
	}
	for _, p := range prefixed {
		p.Flush()
	}

	st := h.Stats()
	if f.stats {
		printUpStats(os.Stderr, st)
	}
	if f.statsJSON != "" {
		if err := writeUpStatsJSON(f.statsJSON, st); err != nil {
			return err
		}
	}
	var failed []string
	for _, v := range vms {
		e := v.Info().Exit
		switch {
		case e == nil:
			failed = append(failed, v.Name()+": did not end")
		case e.Kind.Failed():
			failed = append(failed, fmt.Sprintf("%s: %v", v.Name(), e.Err))
		case e.Kind == vmm.ExitStopped && !interrupted.Load():
			failed = append(failed, v.Name()+": stopped")
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d VMs failed: %s", len(failed), len(vms), strings.Join(failed, "; "))
	}
	if interrupted.Load() {
		return exitError{130}
	}
	return nil
}

// upSnapshot turns the host's counters into --stats-json's schema.
func upSnapshot(hs host.HostStats) upStats {
	st := upStats{Netstack: hs.Netstack, Uplinks: hs.Uplinks}
	for _, v := range hs.VMs {
		vs := upVMStats{Name: v.Name, Exit: vmm.ExitRunning.String(), Stats: v.Stats}
		if v.Exit != nil {
			vs.Exit = v.Exit.Kind.String()
			if v.Exit.Err != nil {
				vs.Error = v.Exit.Err.Error()
			}
		}
		st.VMs = append(st.VMs, vs)
	}
	if s := hs.Sched; s.Enabled {
		st.Sched = &upSchedStats{Policy: s.Policy.Name, Passes: s.Stats.Passes, Parks: s.Stats.Parks, Unparks: s.Stats.Unparks,
			Migrations: s.Stats.Migrations, Errors: s.Stats.Errors, CPUTimeS: s.Stats.CPUTime.Seconds()}
	}
	return st
}

// printRIPs writes where each running VM's vCPUs are (their instruction
// pointers, sampled now): what a guest that stopped making progress runs.
func printRIPs(w io.Writer, vms []*host.VM) {
	for _, v := range vms {
		rips := v.SampleRIPs(200 * time.Millisecond)
		if len(rips) == 0 {
			continue
		}
		parts := make([]string, len(rips))
		for i, r := range rips {
			parts[i] = fmt.Sprintf("%d: %#x", i, r)
			if r == 0 {
				parts[i] = fmt.Sprintf("%d: no answer", i)
			}
		}
		fmt.Fprintf(w, "== VM %s: vCPU instruction pointers: %s\n", v.Name(), strings.Join(parts, ", "))
	}
}

func printUpStats(w io.Writer, hs host.HostStats) {
	st := upSnapshot(hs)
	for _, v := range st.VMs {
		fmt.Fprintf(w, "== VM %s: %s\n%s", v.Name, v.Exit, v.Stats.Format())
	}
	fmt.Fprintln(w, "== netstack")
	st.Netstack.WriteText(w)
	if st.Sched != nil {
		fmt.Fprintf(w, "== sched: policy %s, %d passes, %d parks, %d unparks, %d migrations, %d errors, %.3f s CPU\n",
			st.Sched.Policy, st.Sched.Passes, st.Sched.Parks, st.Sched.Unparks, st.Sched.Migrations, st.Sched.Errors, st.Sched.CPUTimeS)
	}
}

func writeUpStatsJSON(path string, hs host.HostStats) error {
	b, err := json.MarshalIndent(upSnapshot(hs), "", "  ")
	if err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--stats-json: %w", err)
	}
	return nil
}
