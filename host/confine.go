package host

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/colibrivm/colibri/internal/privdrop"
	"github.com/colibrivm/colibri/internal/seccomp"
	"github.com/colibrivm/colibri/sched/cgroup"
)

// Confinement says how a host confines its process once it is set up:
// seccomp filters per kind of thread and a switch to an unprivileged
// user (docs/ARCHITECTURE.md, "Least privilege").
type Confinement struct {
	// Seccomp installs the system call filters: the process-wide list
	// once New has set up the datapath, the observer and the cgroups
	// (just before the pollers and the scheduler start, which add their
	// own), and each vCPU thread's as it starts. A process can be
	// confined once.
	Seccomp bool
	// SeccompAction is what a call outside a list meets: "trap" (the
	// default: the process stops with Go's report of the SIGSYS), "kill"
	// or "log" (allowed, and logged by the kernel's audit).
	SeccompAction string
	// API lets the process-wide list serve a Unix socket (the agent).
	API bool
	// User, if set, is who DropPrivileges switches the process to.
	User *IDs
}

// IDs are a numeric user and group.
type IDs struct {
	UID, GID int
}

// confineProcess installs the process-wide seccomp filter, if asked.
// New calls it once everything that needs root is set up and before it
// starts its pollers and scheduler: their filters stack on it.
func (h *Host) confineProcess() error {
	c := h.cfg.Confine
	if c == nil || !c.Seccomp {
		return nil
	}
	opts, err := c.seccompOptions()
	if err != nil {
		return err
	}
	return seccomp.Install(opts)
}

func (c *Confinement) seccompOptions() (seccomp.Options, error) {
	opts := seccomp.Options{API: c.API}
	if c.SeccompAction != "" {
		a, err := seccomp.ParseAction(c.SeccompAction)
		if err != nil {
			return opts, err
		}
		opts.Action = a
	}
	if c.User != nil {
		opts.DropTo = &seccomp.IDs{UID: c.User.UID, GID: c.User.GID}
	}
	return opts, nil
}

// DropPrivileges switches every thread of the process to Confinement.User
// (no supplementary groups, no capabilities), if set. Call it once the
// VMs the host starts with are created: their kernels, disks, consoles
// and the KVM device are open by then. Before the switch it creates the
// cgroups of those VMs (a VM's group is otherwise made as it first
// starts, which needs root) and hands the process's cgroup tree to the
// user, so that the scheduler can still move vCPU threads into them.
//
// After it: a VM restarted after a reboot or a crash opens its kernel,
// initrd, disks and the KVM device again as the user, and VMs created
// later get no cgroup (an error is logged) unless the user may create
// one; the process's own cgroup is left behind at exit (it cannot be
// moved back as the user) and removed by the next colibri as stale.
func (h *Host) DropPrivileges() error {
	c := h.cfg.Confine
	if c == nil || c.User == nil {
		return nil
	}
	ids := privdrop.IDs{UID: c.User.UID, GID: c.User.GID}
	if h.cgroups != nil {
		if err := h.makeVMGroups(); err != nil {
			return err
		}
		if err := privdrop.Chown(ids, h.cgroups.Paths()...); err != nil {
			return fmt.Errorf("hand the cgroups to %v: %w", ids, err)
		}
	}
	if err := privdrop.Drop(ids); err != nil {
		return err
	}
	h.log.Info("privileges dropped", slog.Any("to", ids))
	return nil
}

// makeVMGroups creates the cgroup of every VM that has none yet.
func (h *Host) makeVMGroups() error {
	h.mu.Lock()
	vms := h.sortedVMs()
	h.mu.Unlock()
	var errs []error
	for _, v := range vms {
		v.mu.Lock()
		if v.group == nil {
			g, err := h.cgroups.NewGroup(v.name, cgroup.Limits{CPUs: h.schedCores})
			if err != nil {
				errs = append(errs, fmt.Errorf("VM %s: %w", v.name, err))
			} else {
				v.group = g
			}
		}
		v.mu.Unlock()
	}
	return errors.Join(errs...)
}
