package main

import "github.com/spf13/cobra"

// extraCommands returns the subcommands that live in other files of this
// package (the scheduler's, up, the agent and its client).
func extraCommands() []*cobra.Command {
	return []*cobra.Command{newRunqlatCmd(), newSchedCmd(), newUpCmd(), newAgentCmd(), newVMCmd(), newEventsCmd(), newExpCmd()}
}
