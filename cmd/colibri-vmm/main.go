// Command colibri-vmm runs one VM on its own: the process `colibri boot`
// becomes (by exec, keeping its pid, terminal and streams) when the VM has
// no network. It links only the VMM, not the agent, the datapath or the
// scheduler, so a VM's process carries none of their code or package
// initialisation (docs/PERF.md, "VMM memory overhead"). It is not meant
// to be run by hand: `colibri boot` describes the VM to it on an inherited
// file descriptor.
//
//	colibri-vmm --spec-fd N
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/colibrivm/colibri/internal/solo"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) != 2 || args[0] != solo.SpecFDFlag {
		fmt.Fprintf(os.Stderr, "usage: %s %s N\n  runs the VM that 'colibri boot' describes on file descriptor N; run 'colibri boot' instead\n", solo.VMMProgram, solo.SpecFDFlag)
		return 2
	}
	fd, err := strconv.Atoi(args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "colibri: %s %q: not a file descriptor\n", solo.SpecFDFlag, args[1])
		return 2
	}
	s, err := solo.ReadSpec(fd)
	if err != nil {
		fmt.Fprintf(os.Stderr, "colibri: %v\n", err)
		return 2
	}
	err = solo.Run(context.Background(), s, solo.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	var st solo.ExitStatus
	switch {
	case err == nil:
		return 0
	case errors.As(err, &st):
		return st.Code
	}
	fmt.Fprintf(os.Stderr, "colibri: %v\n", err)
	return 1
}
