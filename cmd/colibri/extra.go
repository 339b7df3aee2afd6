package main

import "github.com/spf13/cobra"

// extraCommands returns the subcommands that live in other files of this
// package (scheduler, networking).
func extraCommands() []*cobra.Command { return nil }
