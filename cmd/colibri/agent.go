package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/colibrivm/colibri/agent"
	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/clilog"
	"github.com/colibrivm/colibri/internal/exepages"
	"github.com/colibrivm/colibri/internal/logattr"
)

type agentFlags struct {
	socket      string
	config      string
	pollers     string
	policy      string
	schedCores  string
	switches    []string
	stopTimeout time.Duration
	verbose     bool
	confine     confineFlags
}

func newAgentCmd() *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "agent [--socket PATH] [--config FILE] [--switch NAME[,tap=TAP|,xdp=IF]]... [--sched-policy P]",
		Short: "Serve this host's VMs, datapath and scheduler over an HTTP API on a Unix socket",
		Long: `agent runs a colibri host — the polled datapath with its switches, the vCPU
scheduler, and VMs created, started, paused, resumed, stopped and deleted
through its API — until SIGTERM or Ctrl-C, which stop every VM gracefully
(ACPI power button, forced after --stop-timeout) and remove the socket.

The API is HTTP/1.1 with JSON bodies on a Unix socket (mode 0600), specified
by an OpenAPI 3 document (GET /openapi.yaml; agent/api/openapi.yaml in the
source). 'colibri vm' and 'colibri sched get|set' are its command-line client.

The host settings come from --config FILE (an up file's pollers, sched and
switches; VMs in it are created and started) and from the flags, which
override the file. With neither, the agent has no switch, a scheduler with the
linux policy over every core, and no VM.

An agent already serving --socket is refused; a socket left by a dead agent is
replaced (and so are the cgroups it left), and the agent says so.`,
		Example: `  colibri agent --switch sw0,tap=colibri0
  colibri agent --config host.yaml --socket /tmp/colibri.sock
  colibri vm create a.yaml --start && colibri vm list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runAgent(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.socket, "socket", agent.DefaultSocket, "Unix socket to serve the API on")
	fl.StringVar(&f.config, "config", "", "host settings (and VMs to start) in an up file's schema, YAML or JSON")
	fl.StringVar(&f.pollers, "pollers", "", "host cores for the datapath's pollers, e.g. 1 or 2-3 (default: one unpinned poller)")
	fl.StringVar(&f.policy, "sched-policy", "", "scheduling policy: linux, pinned, central or adaptive (default linux, or the file's)")
	fl.StringVar(&f.schedCores, "sched-cores", "", "host cores the scheduler manages, e.g. 0,2-3 (default: every core the pollers do not use)")
	fl.StringArrayVar(&f.switches, "switch", nil, "an L2 switch NAME, with an uplink tap=TAP or xdp=IF (repeatable)")
	fl.DurationVar(&f.stopTimeout, "stop-timeout", host.DefaultStopTimeout, "how long a graceful stop waits for a guest before forcing it off")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log every request and what the VMM does")
	addConfineFlags(fl, &f.confine)
	return cmd
}

// agentSpec builds the host settings from --config and the flags.
func agentSpec(f agentFlags) (*spec.File, error) {
	file := &spec.File{}
	if f.config != "" {
		var err error
		if file, err = spec.LoadHost(f.config); err != nil {
			return nil, err
		}
	}
	if f.pollers != "" {
		cores, err := parseCoreList(f.pollers)
		if err != nil {
			return nil, fmt.Errorf("--pollers: %w", err)
		}
		file.Pollers.Cores = cores
	}
	if f.schedCores != "" {
		cores, err := parseCoreList(f.schedCores)
		if err != nil {
			return nil, fmt.Errorf("--sched-cores: %w", err)
		}
		file.Sched.Cores = cores
	}
	if f.policy != "" {
		file.Sched.Policy = f.policy
	}
	for _, s := range f.switches {
		sw, err := parseSwitchFlag(s)
		if err != nil {
			return nil, err
		}
		file.Switches = append(file.Switches, sw)
	}
	file.Normalize()
	if err := file.ValidateHost(); err != nil {
		return nil, err
	}
	return file, nil
}

// parseSwitchFlag parses --switch NAME[,tap=TAP][,xdp=IF].
func parseSwitchFlag(s string) (spec.Switch, error) {
	parts := strings.Split(s, ",")
	sw := spec.Switch{Name: parts[0]}
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok || v == "":
			return sw, fmt.Errorf("--switch %q: want NAME[,tap=TAP][,xdp=IF]", s)
		case k == "tap":
			sw.Uplinks = append(sw.Uplinks, spec.Uplink{TAP: v})
		case k == "xdp":
			sw.Uplinks = append(sw.Uplinks, spec.Uplink{XDP: v})
		default:
			return sw, fmt.Errorf("--switch %q: unknown key %q (want tap or xdp)", s, k)
		}
	}
	return sw, nil
}

// parseCoreList parses a CPU list like 0,2-3.
func parseCoreList(s string) ([]int, error) {
	var cores []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		var a, b int
		if _, err := fmt.Sscanf(lo, "%d", &a); err != nil {
			return nil, fmt.Errorf("%q: not a CPU list like 0,2-3", s)
		}
		b = a
		if isRange {
			if _, err := fmt.Sscanf(hi, "%d", &b); err != nil || b < a {
				return nil, fmt.Errorf("%q: not a CPU list like 0,2-3", s)
			}
		}
		for c := a; c <= b; c++ {
			cores = append(cores, c)
		}
	}
	return cores, nil
}

func runAgent(cmd *cobra.Command, f agentFlags) error {
	file, err := agentSpec(f)
	if err != nil {
		return err
	}
	confine, err := f.confine.confinement()
	if err != nil {
		return err
	}
	confine.API = true // the filters let it serve its socket
	log := clilog.Agent(f.verbose, os.Stderr)
	ln, err := agent.Listen(f.socket)
	if err != nil {
		return err
	}
	defer ln.Close()
	if ln.Stale {
		log.Warn("replaced a stale socket a dead agent left", slog.String("socket", f.socket))
	}

	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	vms := file.VMs
	hostFile := *file
	hostFile.VMs = nil
	h, err := host.New(ctx, host.Config{
		Spec:           hostFile,
		Scheduler:      true,
		DefaultKernel:  imagesKernel,
		DefaultCmdline: defaultCmdline,
		StopTimeout:    f.stopTimeout,
		Logger:         log,
		Confine:        confine,
	})
	if err != nil {
		if e, ok := err.(*spec.Error); ok && f.config != "" {
			e.File = f.config
		}
		return err
	}
	closed := false
	defer func() {
		if !closed {
			h.Close(context.Background())
		}
	}()
	for _, s := range vms {
		v, err := h.CreateVM(s)
		if err != nil {
			return fmt.Errorf("%s: vm %s: %w", f.config, s.Name, err)
		}
		if err := v.Start(); err != nil {
			return fmt.Errorf("%s: vm %s: %w", f.config, s.Name, err)
		}
	}
	// With --user, the VMs the API creates from now on open their files
	// and the KVM device as that user.
	if err := h.DropPrivileges(); err != nil {
		return err
	}

	srv := &http.Server{Handler: agent.New(agent.Config{Host: h, Version: version, Logger: log}), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("agent serving", slog.String("socket", f.socket), slog.Int("switches", len(hostFile.Switches)), slog.Int("vms", len(vms)))
	// Setting up the host (above all the eBPF observer, which parses the
	// kernel's BTF, a few MB) leaves garbage the runtime would give back
	// only slowly: give it back now (5 MiB of the idle agent's RSS,
	// docs/PERF.md).
	debug.FreeOSMemory()
	exepages.ReleaseAndLog(log) // start-up is over: docs/PERF.md, "VMM memory overhead"

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var sig os.Signal
	select {
	case sig = <-sigs:
	case err := <-served:
		return fmt.Errorf("agent: serving the API: %w", err)
	}
	log.Info("agent stopping: stopping every VM", slog.Any("signal", sig), slog.Duration("timeout", f.stopTimeout))
	// A second signal forces the guests off.
	stopCtx, stopNow := context.WithTimeout(context.Background(), f.stopTimeout+10*time.Second)
	defer stopNow()
	go func() {
		select {
		case <-sigs:
			log.Warn("second signal: forcing the VMs off")
			for _, v := range h.VMs() {
				go v.Stop(context.Background(), host.StopOptions{Force: true})
			}
		case <-stopCtx.Done():
		}
	}()
	closeErr := h.Close(stopCtx)
	closed = true
	shutCtx, shutDone := context.WithTimeout(context.Background(), 5*time.Second)
	defer shutDone()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("agent: shutting the API down", logattr.Err(err))
	}
	if closeErr != nil {
		return fmt.Errorf("agent: stopping the host: %w", closeErr)
	}
	log.Info("agent stopped")
	return nil
}
