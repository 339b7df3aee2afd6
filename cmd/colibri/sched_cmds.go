package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/colibrivm/colibri/sched"
	"github.com/colibrivm/colibri/sched/bench"
	"github.com/colibrivm/colibri/sched/observer"
	"github.com/colibrivm/colibri/sched/threadvcpu"
)

// newRunqlatCmd returns `colibri runqlat`: runqueue-latency histograms of
// processes or threads, like libbpf-tools' runqlat, from the eBPF observer.
func newRunqlatCmd() *cobra.Command {
	var (
		pids, tids []int
		duration   time.Duration
		perCPU     bool
	)
	cmd := &cobra.Command{
		Use:   "runqlat [--pid PID|--tid TID]... [--duration D]",
		Short: "Print runqueue-latency histograms of processes, threads or VMs (eBPF; root)",
		Long: `runqlat traces how long threads wait on a runqueue before they run, and
prints log2 histograms in microseconds: one per thread of each --pid (a VM is
the colibri process running it) and each --tid, and one per CPU. With no
--pid or --tid it traces every thread on the host, per CPU. It stops after
--duration or at Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRunqlat(cmd, pids, tids, duration, perCPU || (len(pids) == 0 && len(tids) == 0))
		},
	}
	f := cmd.Flags()
	f.IntSliceVar(&pids, "pid", nil, "trace every thread of process `PID` (repeatable)")
	f.IntSliceVar(&tids, "tid", nil, "trace thread `TID` (repeatable)")
	f.DurationVar(&duration, "duration", 5*time.Second, "how long to trace")
	f.BoolVar(&perCPU, "per-cpu", false, "also print per-CPU histograms with --pid/--tid")
	return cmd
}

func runRunqlat(cmd *cobra.Command, pids, tids []int, duration time.Duration, perCPU bool) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	all := len(pids) == 0 && len(tids) == 0
	obs, err := observer.New(observer.Options{TraceAll: all})
	if err != nil {
		return fmt.Errorf("runqlat: %w", err)
	}
	defer obs.Close()
	watched := map[int]int{} // tid → slot
	for _, pid := range pids {
		m, err := obs.WatchProcess(pid)
		if err != nil {
			return fmt.Errorf("runqlat: %w", err)
		}
		for t, s := range m {
			watched[t] = s
		}
	}
	for _, tid := range tids {
		s, err := obs.Watch(tid)
		if err != nil {
			return fmt.Errorf("runqlat: %w", err)
		}
		watched[tid] = s
	}
	errw := cmd.ErrOrStderr()
	fmt.Fprintf(errw, "Tracing runqueue latency of %s for %v... Hit Ctrl-C to end.\n", runqlatWhat(all, len(watched)), duration)
	t := time.NewTimer(duration)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	out := cmd.OutOrStdout()
	ids := make([]int, 0, len(watched))
	for tid := range watched {
		ids = append(ids, tid)
	}
	sort.Ints(ids)
	for _, tid := range ids {
		h, err := obs.SlotHist(watched[tid])
		if err != nil {
			return fmt.Errorf("runqlat: %w", err)
		}
		fmt.Fprintf(out, "\ntid = %d %s\n", tid, threadComm(tid))
		h.Print(out)
	}
	if !perCPU {
		return nil
	}
	var total observer.Hist
	for cpu := 0; cpu < observer.MaxCPUs; cpu++ {
		if _, err := os.Stat(fmt.Sprintf("/sys/devices/system/cpu/cpu%d", cpu)); err != nil {
			break
		}
		h, err := obs.CPUHist(cpu)
		if err != nil {
			return fmt.Errorf("runqlat: %w", err)
		}
		total.Add(&h)
		if h.Count() > 0 {
			fmt.Fprintf(out, "\ncpu = %d\n", cpu)
			h.Print(out)
		}
	}
	fmt.Fprintf(out, "\nall CPUs (%d samples)\n", total.Count())
	total.Print(out)
	return nil
}

func runqlatWhat(all bool, n int) string {
	if all {
		return "all threads"
	}
	return strconv.Itoa(n) + " threads"
}

func threadComm(tid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", tid))
	if err != nil {
		return ""
	}
	return "(" + strings.TrimSpace(string(b)) + ")"
}

// newSchedCmd returns `colibri sched`, the scheduler's commands.
func newSchedCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sched",
		Short: "The vCPU scheduler: experiments, and a running agent's policy",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newSchedBenchCmd(), newSchedGetCmd(), newSchedSetCmd())
	return cmd
}

func newSchedBenchCmd() *cobra.Command {
	var (
		cfg                       bench.Config
		policy, cores, service    string
		mode                      string
		jsonPath                  string
		plotPath                  string
		threshold, quantum, grace time.Duration
	)
	cmd := &cobra.Command{
		Use:   "bench --policy P|all --lc N --batch M --cores C --duration D [--json FILE]",
		Short: "Measure LC request latency beside batch vCPUs under each policy (thread vCPUs; root for eBPF)",
		Long: `bench runs latency-critical thread vCPUs serving open-loop Poisson requests
(--load of a core each, --service time distribution) beside batch vCPUs that
spin, on the managed --cores, under each policy; first an isolated run with no
batch vCPUs (the same cores, scheduler thread and LC placement: policy
--isolated-policy). The set is measured --repeat times; the table shows the
medians, the p99's range, p99 against the isolated p99 and batch work against
linux's. A repetition whose isolated p99 is worse than a colocated one is
flagged as a failed measurement and left out of the medians. It prints
request latency p50/p99/p99.9, batch work, preemptions/s, migrations/s, the
scheduler's CPU time, the managed cores' time other threads took and the
hypervisor stole, and runqueue-latency histograms; with --json it writes
{"policies":[{"policy":…,"p50_us":…,"p99_us":…,"spread":{…},…}],
"isolated_p99_us":…,"repetitions":[…],"failed":…}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Policies = strings.Split(policy, ",")
			if cores != "" {
				cs, err := sched.ParseCPUList(cores)
				if err != nil {
					return fmt.Errorf("--cores: %w", err)
				}
				cfg.Cores = cs
			}
			d, err := threadvcpu.ParseDist(service)
			if err != nil {
				return fmt.Errorf("--service: %w", err)
			}
			cfg.Service = d
			cfg.Central = sched.CentralConfig{Threshold: threshold, Quantum: quantum, Grace: grace}
			if mode != "" {
				m, err := sched.ParseMode(mode)
				if err != nil {
					return fmt.Errorf("--mode: %w", err)
				}
				cfg.Mode = m
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runSchedBench(ctx, cmd, cfg, jsonPath, plotPath)
		},
	}
	f := cmd.Flags()
	f.StringVar(&policy, "policy", "all", "policies to compare: "+strings.Join(sched.PolicyNames(), ", ")+", comma-separated, or all")
	f.IntVar(&cfg.LC, "lc", 1, "latency-critical vCPUs")
	f.IntVar(&cfg.Batch, "batch", 2, "batch vCPUs")
	f.IntVar(&cfg.BatchVMs, "batch-vms", 0, "batch VMs the batch vCPUs are spread over (default: one VM each)")
	f.IntVar(&cfg.Repeat, "repeat", 3, "repetitions of the whole set (isolated, then every policy)")
	f.StringVar(&cfg.IsolatedPolicy, "isolated-policy", "pinned", "policy of the isolated run")
	f.BoolVar(&cfg.NoHousekeeping, "no-housekeeping", false, "leave this process's own threads free to run on the managed cores")
	f.BoolVar(&cfg.NoBallast, "no-ballast", false, "let the isolated run's cores go idle (default: a SCHED_IDLE spinner keeps each awake)")
	f.IntVar(&cfg.Nice, "nice", 0, "nice value of the vCPU threads in every run (below 0 also of this process's autogroup)")
	f.StringVar(&cores, "cores", "", "managed CPUs, e.g. 1-3 (default: all but --sched-cpu)")
	f.IntVar(&cfg.SchedCPU, "sched-cpu", 0, "the scheduler thread's CPU")
	f.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measured time per policy")
	f.DurationVar(&cfg.Warmup, "warmup", 0, "unmeasured time before each policy's measurement (default duration/10)")
	f.Float64Var(&cfg.Load, "load", 0.2, "offered load per LC vCPU, as a fraction of one core")
	f.StringVar(&service, "service", "exp:20us", "LC service time: fixed:D, exp:MEAN or bimodal:SHORT,LONG,PLONG")
	f.DurationVar(&cfg.Period, "period", 5*time.Microsecond, "scheduler pass period")
	f.BoolVar(&cfg.Sleep, "sleep", false, "sleep between passes instead of busy-polling the scheduler's CPU (--mode sleep)")
	f.StringVar(&mode, "mode", "busy-poll", "how the scheduler waits between passes: busy-poll, sleep or adaptive")
	f.IntVar(&cfg.FIFOPriority, "fifo", 0, "run the scheduler SCHED_FIFO at this priority (0: off)")
	f.DurationVar(&threshold, "threshold", 0, "central: runqueue latency at which an LC vCPU preempts (default 20µs)")
	f.DurationVar(&quantum, "quantum", 0, "central: batch time slice (default 2ms)")
	f.DurationVar(&grace, "grace", 0, "central: LC idle time before batch gets a core back (default 50µs)")
	f.BoolVar(&cfg.NoObserver, "no-observer", false, "run without the eBPF observer (no root needed; central cannot see waiting LC vCPUs)")
	f.Uint64Var(&cfg.Seed, "seed", 1, "request stream seed")
	f.StringVar(&jsonPath, "json", "", "write results as JSON to `FILE`")
	f.StringVar(&plotPath, "plot", "", "write the LC latency CDFs as an SVG plot to `FILE`")
	return cmd
}

func runSchedBench(ctx context.Context, cmd *cobra.Command, cfg bench.Config, jsonPath, plotPath string) error {
	res, err := bench.Run(ctx, cfg, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	res.WriteTable(cmd.OutOrStdout())
	if jsonPath != "" {
		if err := res.WriteJSON(jsonPath); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "results written to %s\n", jsonPath)
	}
	if plotPath != "" {
		if err := res.WriteSVG(plotPath); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "plot written to %s\n", plotPath)
	}
	return nil
}

// The root command registers these; this keeps them referenced (and
// staticcheck quiet) in builds where it does not yet.
var _ = []func() *cobra.Command{newRunqlatCmd, newSchedCmd}
