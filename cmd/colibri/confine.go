package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/internal/privdrop"
	"github.com/colibrivm/colibri/internal/seccomp"
)

// confineFlags are --seccomp and --user, shared by boot and up.
type confineFlags struct {
	seccomp string
	user    string
}

func addConfineFlags(fl *pflag.FlagSet, f *confineFlags) {
	def := "trap"
	if v := os.Getenv("COLIBRI_SECCOMP"); v != "" {
		def = v
	}
	fl.StringVar(&f.seccomp, "seccomp", def, "system call filters, one list per kind of thread (vCPU, poller, scheduler, the rest), installed once the VMs are set up: "+
		"trap (a call outside its thread's list stops colibri with Go's SIGSYS report and the call site), kill (SIGSYS at once), log (allowed, logged by the kernel's audit: to find what a list misses), off; the default comes from $COLIBRI_SECCOMP if set")
	fl.StringVar(&f.user, "user", "", "once set up, run every thread as this numeric `UID[:GID]` with no supplementary groups and no capabilities "+
		"(the KVM device, TAPs, AF_XDP and eBPF, cgroups, images, disks and console files are opened before; e.g. 65534:65534)")
}

// parse checks the flags; on is false for --seccomp=off, ids nil without
// --user.
func (f confineFlags) parse() (on bool, action seccomp.Action, ids *privdrop.IDs, err error) {
	switch f.seccomp {
	case "off":
	case "on":
		on = true
	default:
		if action, err = seccomp.ParseAction(f.seccomp); err != nil {
			return false, 0, nil, fmt.Errorf("--seccomp: %w (or off)", err)
		}
		on = true
	}
	if f.user != "" {
		v, err := privdrop.ParseIDs(f.user)
		if err != nil {
			return false, 0, nil, fmt.Errorf("--user: %w", err)
		}
		ids = &v
	}
	return on, action, ids, nil
}

// confinement is what a host gets from the flags.
func (f confineFlags) confinement() (*host.Confinement, error) {
	on, action, ids, err := f.parse()
	if err != nil {
		return nil, err
	}
	c := &host.Confinement{Seccomp: on, SeccompAction: action.String()}
	if ids != nil {
		c.User = &host.IDs{UID: ids.UID, GID: ids.GID}
	}
	return c, nil
}

// prepareOutput creates the file at path (if set) and, with --user,
// gives it to that user, so that colibri can still write it at exit.
func (f confineFlags) prepareOutput(path string) error {
	if path == "" || f.user == "" {
		return nil
	}
	ids, err := privdrop.ParseIDs(f.user)
	if err != nil {
		return fmt.Errorf("--user: %w", err)
	}
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer file.Close()
	return file.Chown(ids.UID, ids.GID)
}
