package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/colibrivm/colibri/agent"
	"github.com/colibrivm/colibri/agent/api"
	"github.com/colibrivm/colibri/agent/client"
	"github.com/colibrivm/colibri/host/spec"
)

// clientFlags are the flags every client command takes.
type clientFlags struct {
	socket string
	json   bool
}

func (f *clientFlags) add(cmd *cobra.Command, withJSON bool) {
	cmd.Flags().StringVar(&f.socket, "socket", envOr("COLIBRI_SOCKET", agent.DefaultSocket), "the agent's Unix socket ($COLIBRI_SOCKET)")
	if withJSON {
		cmd.Flags().BoolVar(&f.json, "json", false, "print the agent's JSON answer")
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// withClient makes a command's RunE of run: run gets a client of the
// agent on the --socket flag and the command's context, cancelled by
// Ctrl-C; the client's idle connections are closed after it.
func (f *clientFlags) withClient(run func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		c := client.New(f.socket)
		defer c.Close()
		return run(ctx, c, cmd, args)
	}
}

// show prints v to w: the agent's JSON with --json, else text's form.
func show[T any](f *clientFlags, w io.Writer, v T, text func(io.Writer, T)) error {
	if f.json {
		return printJSON(w, v)
	}
	text(w, v)
	return nil
}

func printNameState(w io.Writer, v api.VM) { fmt.Fprintf(w, "%s %s\n", v.Name, v.State) }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newVMCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Create, start, pause, resume, stop and delete VMs of a running agent",
		Long: `vm talks to a running 'colibri agent' over its socket (--socket, or
$COLIBRI_SOCKET). Each subcommand is one API call.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newVMCreateCmd(), newVMListCmd(), newVMInfoCmd(),
		newVMActionCmd("start", "Boot a created VM (or boot again one that ended)"),
		newVMActionCmd("pause", "Pause a running VM"),
		newVMActionCmd("resume", "Resume a paused VM"),
		newVMStopCmd(), newVMDeleteCmd(), newVMWaitCmd(), newVMConsoleCmd(), newVMCountersCmd())
	return cmd
}

func newVMCreateCmd() *cobra.Command {
	var (
		f     clientFlags
		start bool
	)
	cmd := &cobra.Command{
		Use:   "create FILE [--start]",
		Short: "Create a VM from FILE (one VM as an up file declares it, YAML or JSON)",
		Long: `create reads one VM from FILE — the schema of a VM in an up file (name, kernel,
initrd, cmdline, append, cpus, mem, class, disks, nics, console, on_reboot,
on_crash) — checks it, makes its paths absolute (relative ones are relative to
FILE's directory) and asks the agent to create it; --start starts it too.`,
		Example: "  echo '{name: a, cpus: 1, mem: 256M, nics: [{switch: sw0}]}' > a.yaml && colibri vm create a.yaml --start",
		Args:    cobra.ExactArgs(1),
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			format := spec.Auto
			switch strings.ToLower(filepath.Ext(args[0])) {
			case ".json":
				format = spec.JSON
			case ".yaml", ".yml":
				format = spec.YAML
			}
			vs, err := spec.ParseVM(data, format, filepath.Dir(args[0]))
			if err != nil {
				if e, ok := err.(*spec.Error); ok {
					e.File = args[0]
				}
				return err
			}
			vm, err := c.CreateVM(ctx, agent.SpecJSON(*vs), start)
			if err != nil {
				return err
			}
			return show(&f, cmd.OutOrStdout(), vm, printNameState)
		}),
	}
	f.add(cmd, true)
	cmd.Flags().BoolVar(&start, "start", false, "start the VM once it is created")
	return cmd
}

func newVMListCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the agent's VMs",
		Args:  cobra.NoArgs,
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, _ []string) error {
			vms, err := c.VMs(ctx)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), vms)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tCPUS\tMEM\tCLASS\tNICS\tVCPU TIDS\tEXIT")
			for _, v := range vms {
				var tids []string
				for _, c := range v.VCPUs {
					tids = append(tids, strconv.Itoa(c.TID))
				}
				var nics []string
				for _, n := range v.NICs {
					nics = append(nics, n.Switch+"/"+n.MAC)
				}
				exit := "-"
				if v.Exit != nil {
					exit = fmt.Sprintf("%s (%d)", v.Exit.Reason, v.Exit.Status)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.State, v.Spec.CPUs, v.Spec.Mem, v.Spec.Class,
					orDash(strings.Join(nics, " ")), orDash(strings.Join(tids, ",")), exit)
			}
			return tw.Flush()
		}),
	}
	f.add(cmd, true)
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newVMInfoCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "info NAME",
		Short: "Show a VM: state, vCPUs and their threads, NICs with counters, disks",
		Args:  cobra.ExactArgs(1),
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			v, err := c.VM(ctx, args[0])
			if err != nil {
				return err
			}
			return show(&f, cmd.OutOrStdout(), v, printVM)
		}),
	}
	f.add(cmd, true)
	return cmd
}

func printVM(w io.Writer, v api.VM) {
	fmt.Fprintf(w, "name:      %s\nstate:     %s\n", v.Name, v.State)
	fmt.Fprintf(w, "spec:      %d vCPUs, %s, class %s, on reboot %s, on crash %s\n", v.Spec.CPUs, v.Spec.Mem, v.Spec.Class, v.Spec.OnReboot, v.Spec.OnCrash)
	kernel := v.Spec.Kernel
	if kernel == "" {
		kernel = "(the default images)"
	}
	fmt.Fprintf(w, "kernel:    %s\n", kernel)
	fmt.Fprintf(w, "created:   %s\n", v.Created.Format(time.RFC3339))
	if v.Started != nil {
		fmt.Fprintf(w, "started:   %s (%d restarts)\n", v.Started.Format(time.RFC3339), v.Restarts)
	}
	if v.Exit != nil {
		fmt.Fprintf(w, "exit:      %s, status %d", v.Exit.Reason, v.Exit.Status)
		if v.Exit.Forced {
			fmt.Fprint(w, ", forced")
		}
		if v.Exit.Error != "" {
			fmt.Fprintf(w, ": %s", v.Exit.Error)
		}
		fmt.Fprintln(w)
	}
	for _, c := range v.VCPUs {
		fmt.Fprintf(w, "vcpu %d:    tid %d, running %v, ran %.3fs, waited %.3fs, %d preemptions\n", c.ID, c.TID, c.Running, c.RunSeconds, c.WaitSeconds, c.Preemptions)
	}
	for i, n := range v.NICs {
		state := "up"
		if n.Paused {
			state = "paused"
		}
		var drops []string
		for cause, k := range n.Drops {
			if k > 0 {
				drops = append(drops, fmt.Sprintf("%s %d", cause, k))
			}
		}
		fmt.Fprintf(w, "eth%d:      %s on %s (port %s, %s): sent %d frames / %d bytes, received %d / %d, drops: %s\n",
			i, n.MAC, n.Switch, n.Port, state, n.TxPackets, n.TxBytes, n.RxPackets, n.RxBytes, orDash(strings.Join(drops, ", ")))
	}
	for i, d := range v.Disks {
		ro := ""
		if d.ReadOnly {
			ro = " (read-only)"
		}
		fmt.Fprintf(w, "disk %d:    %s%s\n", i, d.Path, ro)
	}
	if v.ConsoleLostBytes > 0 {
		fmt.Fprintf(w, "console:   %d bytes (%d lost on the way to its file or terminal)\n", v.ConsoleBytes, v.ConsoleLostBytes)
	} else {
		fmt.Fprintf(w, "console:   %d bytes\n", v.ConsoleBytes)
	}
}

func newVMActionCmd(action, short string) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   action + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			var v api.VM
			var err error
			switch action {
			case "start":
				v, err = c.Start(ctx, args[0])
			case "pause":
				v, err = c.Pause(ctx, args[0])
			case "resume":
				v, err = c.Resume(ctx, args[0])
			}
			if err != nil {
				return err
			}
			return show(&f, cmd.OutOrStdout(), v, printNameState)
		}),
	}
	f.add(cmd, true)
	return cmd
}

func newVMStopCmd() *cobra.Command {
	var (
		f       clientFlags
		force   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "stop NAME [--force] [--timeout D]",
		Short: "Stop a VM: press its power button, force it off after --timeout (or at once with --force)",
		Args:  cobra.ExactArgs(1),
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			opts := api.Stop{Force: force}
			if timeout > 0 {
				opts.Timeout = timeout.String()
			}
			v, err := c.Stop(ctx, args[0], opts)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), v)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s", v.Name, v.State)
			if v.Exit != nil {
				fmt.Fprintf(cmd.OutOrStdout(), " (%s, status %d)", v.Exit.Reason, v.Exit.Status)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		}),
	}
	f.add(cmd, true)
	cmd.Flags().BoolVar(&force, "force", false, "force the VM off at once")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "how long to wait for the guest to shut down before forcing it (default: the agent's --stop-timeout)")
	return cmd
}

func newVMDeleteCmd() *cobra.Command {
	var (
		f     clientFlags
		force bool
	)
	cmd := &cobra.Command{
		Use:   "delete NAME [--force]",
		Short: "Delete a VM that is not running (--force: stop it by force first)",
		Args:  cobra.ExactArgs(1),
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			if err := c.Delete(ctx, args[0], force); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s deleted\n", args[0])
			return nil
		}),
	}
	f.add(cmd, false)
	cmd.Flags().BoolVar(&force, "force", false, "stop a running VM by force, then delete it")
	return cmd
}

func newVMWaitCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "wait NAME",
		Short: "Wait until a VM's run ends; exit with its status (0 powered off, 137 forced off, 1 failed)",
		Args:  cobra.ExactArgs(1),
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			e, err := c.Wait(ctx, args[0])
			if err != nil {
				return err
			}
			if f.json {
				if err := printJSON(cmd.OutOrStdout(), e); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s, status %d\n", args[0], e.Reason, e.Status)
			}
			if e.Status != 0 {
				return exitError{e.Status}
			}
			return nil
		}),
	}
	f.add(cmd, true)
	return cmd
}

func newVMConsoleCmd() *cobra.Command {
	var (
		f      clientFlags
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "console NAME [--follow]",
		Short: "Print a VM's console output (the last 256 KiB), and with --follow what comes next",
		Args:  cobra.ExactArgs(1),
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			rc, _, err := c.Console(ctx, args[0], 0, follow)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(cmd.OutOrStdout(), rc)
			if ctx.Err() != nil {
				return nil
			}
			return err
		}),
	}
	f.add(cmd, false)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until Ctrl-C or the VM is deleted")
	return cmd
}

func newVMCountersCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "counters NAME",
		Short: "Print a VM's measurements: boot times, exits by reason",
		Args:  cobra.ExactArgs(1),
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			ct, err := c.Counters(ctx, args[0])
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), ct)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "first output after %.3fs, guest init after %.3fs\n", ct.FirstOutputSeconds, ct.GuestInitSeconds)
			fmt.Fprintf(w, "exits to colibri: %s\n", formatCountMap(ct.UserspaceExits))
			fmt.Fprintf(w, "KVM counters:     %s\n", formatCountMap(ct.KVMExits))
			fmt.Fprintf(w, "kicks %d, parks %d, pauses %d, unhandled pio %d, mmio %d\n", ct.Kicks, ct.Parks, ct.Pauses, ct.UnhandledPIO, ct.UnhandledMMIO)
			return nil
		}),
	}
	f.add(cmd, true)
	return cmd
}

func formatCountMap(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sortByCount(keys, m)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return orDash(strings.Join(parts, ", "))
}

func sortByCount(keys []string, m map[string]uint64) {
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && (m[keys[j]] > m[keys[j-1]] || m[keys[j]] == m[keys[j-1]] && keys[j] < keys[j-1]); j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
}

func newSchedGetCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "get",
		Short: "Show a running agent's scheduler: policy, parameters, cores, counters",
		Args:  cobra.NoArgs,
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, _ []string) error {
			s, err := c.Sched(ctx)
			if err != nil {
				return err
			}
			return show(&f, cmd.OutOrStdout(), s, printSched)
		}),
	}
	f.add(cmd, true)
	return cmd
}

func printSched(w io.Writer, s api.Sched) {
	if !s.Enabled {
		fmt.Fprintln(w, "no scheduler: the host kernel places the vCPUs")
		return
	}
	params := []string{}
	for _, p := range []struct{ k, v string }{{"threshold", s.Threshold}, {"quantum", s.Quantum}, {"grace", s.Grace}} {
		if p.v != "" {
			params = append(params, p.k+" "+p.v)
		}
	}
	fmt.Fprintf(w, "policy:    %s %s\n", s.Policy, strings.Join(params, ", "))
	cpu := "unpinned"
	if s.CPU >= 0 {
		cpu = "CPU " + strconv.Itoa(s.CPU)
	}
	fmt.Fprintf(w, "cores:     %v; scheduler thread %s, mode %s, period %s\n", s.Cores, cpu, s.Mode, s.Period)
	obs := "yes"
	if !s.Observer {
		obs = "no (" + s.ObserverError + ")"
	}
	fmt.Fprintf(w, "observer:  %s\n", obs)
	fmt.Fprintf(w, "vCPUs:     %d registered\n", s.VCPUs)
	fmt.Fprintf(w, "counters:  %d passes, %d parks, %d unparks, %d migrations, %d errors, %.3f s CPU\n",
		s.Passes, s.Parks, s.Unparks, s.Migrations, s.Errors, s.CPUSeconds)
}

func newSchedSetCmd() *cobra.Command {
	var (
		f                         clientFlags
		threshold, quantum, grace time.Duration
	)
	cmd := &cobra.Command{
		Use:   "set POLICY [--threshold D] [--quantum D] [--grace D]",
		Short: "Change a running agent's scheduling policy, live (linux, pinned, central, adaptive)",
		Args:  cobra.ExactArgs(1),
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			p := api.SetSched{Policy: args[0]}
			for _, d := range []struct {
				v   time.Duration
				out *string
			}{{threshold, &p.Threshold}, {quantum, &p.Quantum}, {grace, &p.Grace}} {
				if d.v > 0 {
					*d.out = d.v.String()
				}
			}
			s, err := c.SetSched(ctx, p)
			if err != nil {
				return err
			}
			return show(&f, cmd.OutOrStdout(), s, printSched)
		}),
	}
	f.add(cmd, true)
	fl := cmd.Flags()
	fl.DurationVar(&threshold, "threshold", 0, "central: runqueue wait after which an LC vCPU preempts a batch one")
	fl.DurationVar(&quantum, "quantum", 0, "central: batch time slice")
	fl.DurationVar(&grace, "grace", 0, "central: how long LC vCPUs sleep before batch gets the core back")
	return cmd
}

func newEventsCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print a running agent's events (VM state changes) as they happen, until Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: f.withClient(func(ctx context.Context, c *client.Client, cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			return c.Events(ctx, func(ev api.Event) bool {
				if f.json {
					_ = json.NewEncoder(w).Encode(ev)
					return true
				}
				line := fmt.Sprintf("%s %-9s", ev.Time.Format("15:04:05.000"), ev.Type)
				if ev.VM != "" {
					line += " " + ev.VM
				}
				if ev.State != "" {
					line += fmt.Sprintf(" %s → %s", orDash(ev.Previous), ev.State)
				}
				if ev.Reason != "" {
					line += " (" + ev.Reason + ")"
				}
				if ev.Lost > 0 {
					line += fmt.Sprintf(" %d events lost", ev.Lost)
				}
				fmt.Fprintln(w, line)
				return true
			})
		}),
	}
	f.add(cmd, true)
	return cmd
}
