package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/colibrivm/colibri/internal/kvmdebugfs"
)

// hostCPU adds the host's scheduler counters to c, under host_ names: from
// /proc/schedstat, summed over CPUs, the time tasks ran (host_cpu_ns),
// waited on a run queue (host_wait_ns), and how often a CPU went idle
// (host_goidle); and the same run and wait times of the VMM's own threads
// (vmm_cpu_ns, vmm_wait_ns: every thread of pids and, for QEMU, their
// vhost-PID kernel workers). Missing files leave the counters out.
func hostCPU(c kvmdebugfs.Counters, pids []int) {
	if b, err := os.ReadFile("/proc/schedstat"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 10 || !strings.HasPrefix(f[0], "cpu") {
				continue
			}
			// cpuN yld_count 0 sched_count sched_goidle ttwu_count ttwu_local rq_cpu_time rq_run_delay pcount
			c["host_goidle"] += atou(f[4])
			c["host_cpu_ns"] += atou(f[7])
			c["host_wait_ns"] += atou(f[8])
		}
	}
	tasks := []string{}
	for _, pid := range pids {
		t, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
		tasks = append(tasks, t...)
	}
	if comms, _ := filepath.Glob("/proc/[0-9]*/comm"); len(comms) > 0 {
		want := map[string]bool{}
		for _, pid := range pids {
			want[fmt.Sprintf("vhost-%d", pid)] = true
		}
		for _, f := range comms {
			if b, err := os.ReadFile(f); err == nil && want[strings.TrimSpace(string(b))] {
				tasks = append(tasks, filepath.Dir(f))
			}
		}
	}
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(t, "schedstat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b)) // run_ns wait_ns timeslices
		if len(f) >= 2 {
			c["vmm_cpu_ns"] += atou(f[0])
			c["vmm_wait_ns"] += atou(f[1])
		}
	}
}

func atou(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}
