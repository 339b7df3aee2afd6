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
	root := newRootCmd()
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

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "colibri",
		Short: "A KVM virtual machine monitor with a microsecond vCPU scheduler",
		Long: `colibri boots Linux guests on KVM, schedules their vCPUs from a central
userspace scheduler, and serves their virtio queues from polled cores.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newBootCmd(), newCheckCmd(), newVersionCmd())
	root.AddCommand(extraCommands()...)
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
