package host

import (
	"log/slog"
	"slices"

	"github.com/colibrivm/colibri/internal/logattr"
	"github.com/colibrivm/colibri/sched"
)

// housekeep moves the process's own threads — the Go runtime's (its Ms,
// sysmon, GC workers, the template thread later Ms are cloned from) and
// every worker started so far — onto the housekeeping cores: the CPUs
// this process may use minus the managed cores, the pollers' cores and,
// if that still leaves one, the scheduler thread's own CPU. New calls it
// once the cores are known and before the pollers and the scheduler
// thread start, so that no vCPU, poller or scheduler thread exists yet;
// a thread that already has an affinity of its own (someone pinned it)
// is left alone. The threads started later inherit the housekeeping
// mask: a poller and a pinned scheduler thread then pin themselves, and
// a vCPU thread is moved onto the managed cores by its VM's cgroup
// (cpuset) and by the scheduler, which pins or floats every vCPU it
// registers. With no core left besides the managed and poller cores, the
// threads share the pollers' cores; with none besides the managed cores (a
// machine that manages them all) it does nothing and says so. Close puts
// the threads back.
func (h *Host) housekeep() {
	avail, err := availableCores()
	if err != nil {
		h.log.Warn("housekeeping: threads left where they are", logattr.Err(err))
		return
	}
	hk := sched.HousekeepingCPUs(avail, h.schedCores, h.file.Pollers.Cores)
	if c := h.file.Sched.CPU; c != nil && h.sched != nil && len(hk) > 1 {
		hk = slices.DeleteFunc(hk, func(x int) bool { return x == *c })
	}
	if len(hk) == 0 {
		// The managed cores are the ones to keep clear: the vCPUs' latency
		// is what the scheduler works for; a poller copes with a neighbour.
		hk = sched.HousekeepingCPUs(avail, h.schedCores)
		if len(hk) == 0 {
			h.log.Info("housekeeping: no core is left besides the managed cores: the process's own threads share them",
				slog.Any("available", avail), slog.Any("managed", h.schedCores))
			return
		}
		h.log.Info("housekeeping: no core is left besides the managed and poller cores: the process's own threads share the pollers'",
			slog.Any("available", avail), slog.Any("managed", h.schedCores), slog.Any("pollers", h.file.Pollers.Cores))
	}
	res, restore, err := sched.Housekeep(hk, nil)
	h.closers = append(h.closers, func() error { return restore() })
	if err != nil {
		h.log.Warn("housekeeping", logattr.Err(err))
	}
	h.log.Info("housekeeping: the process's own threads moved off the managed and poller cores",
		slog.Any("cpus", hk), slog.Int("moved", len(res.Moved)), slog.Int("kept", res.Kept))
}
