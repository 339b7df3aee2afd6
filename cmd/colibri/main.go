// Command colibri is a KVM virtual machine monitor with a microsecond vCPU
// scheduler and a kernel-bypass network datapath.
//
//	colibri boot [--kernel bzImage] [--initrd initrd] [--cpus N] [--mem SIZE] ...
//	colibri check
//	colibri version
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a process exit status through cobra.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	root := newRootCmd(os.Args[1:])
	err := root.Execute()
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	default:
		fmt.Fprintf(os.Stderr, "colibri: %v\n", err)
		os.Exit(1)
	}
}

// subcommand is a top-level command and the function that builds it.
type subcommand struct {
	name  string
	build func() *cobra.Command
}

// subcommands lists colibri's top-level commands by name (each name is
// its command's Name(): TestSubcommandNames checks).
func subcommands() []subcommand {
	return []subcommand{
		{"boot", newBootCmd}, {"check", newCheckCmd}, {"version", newVersionCmd},
		{"runqlat", newRunqlatCmd}, {"sched", newSchedCmd}, {"up", newUpCmd}, {"agent", newAgentCmd},
		{"vm", newVMCmd}, {"events", newEventsCmd}, {"exp", newExpCmd},
	}
}

// newRootCmd builds the command tree for args (the command line without
// the program's name). When args name a subcommand only that one is built:
// the tree of every command and its flags is ~0.3 MiB of heap a long-lived
// VMM would carry (measured with `boot --help`, docs/PERF.md). Anything
// else (help, completion, a flag first, a typo) gets the whole tree.
func newRootCmd(args []string) *cobra.Command {
	root := &cobra.Command{
		Use:   "colibri",
		Short: "A KVM virtual machine monitor with a microsecond vCPU scheduler",
		Long: `colibri boots Linux guests on KVM, schedules their vCPUs from a central
userspace scheduler, and serves their virtio queues from polled cores.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	subs := subcommands()
	if len(args) > 0 {
		for _, s := range subs {
			if s.name == args[0] {
				root.AddCommand(s.build())
				return root
			}
		}
	}
	for _, s := range subs {
		root.AddCommand(s.build())
	}
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print colibri's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "colibri %s\n", version)
		},
	}
}
