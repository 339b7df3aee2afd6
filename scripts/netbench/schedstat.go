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
	listThreads := os.Getenv("NETBENCH_THREADS") == "1"
	if listThreads {
		// The guests' memory as KVM maps it now (gauges, not counters),
		// and the host's free 2 MiB-or-larger blocks.
		fmt.Fprintf(os.Stderr, "netbench: kvm mappings: 4k=%d 2m=%d 1g=%d; %s\n",
			c["pages_4k"], c["pages_2m"], c["pages_1g"], hugeFree())
	}
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
			comm, _ := os.ReadFile(filepath.Join(t, "comm"))
			role := threadRole(strings.TrimSpace(string(comm)))
			if listThreads {
				fmt.Fprintf(os.Stderr, "netbench: thread %s %q role=%s run_ns=%s wait_ns=%s %s\n",
					filepath.Base(t), strings.TrimSpace(string(comm)), role, f[0], f[1], placement(t))
			}
			c["vmm_"+role+"_cpu_ns"] += atou(f[0])
			c["vmm_"+role+"_wait_ns"] += atou(f[1])
		}
	}
}

// threadRole tells a VMM thread's part from its name: "vcpu" (colibri's
// vcpuN, QEMU's "CPU N/KVM"), "dp" for the datapath (colibri's pollerN,
// QEMU's vhost-PID workers) or "other" (the Go runtime's threads, QEMU's
// main loop and I/O threads).
func threadRole(comm string) string {
	switch {
	case strings.HasPrefix(comm, "vcpu"), strings.HasPrefix(comm, "CPU ") && strings.HasSuffix(comm, "/KVM"):
		return "vcpu"
	case strings.HasPrefix(comm, "poller"), strings.HasPrefix(comm, "vhost-"):
		return "dp"
	}
	return "other"
}

func atou(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// placement is a thread's allowed CPUs and the CPU it last ran on, from
// /proc/.../status and stat, for NETBENCH_THREADS=1.
func placement(task string) string {
	allowed := "?"
	if b, err := os.ReadFile(filepath.Join(task, "status")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
				allowed = strings.TrimSpace(v)
			}
		}
	}
	last := "?"
	if b, err := os.ReadFile(filepath.Join(task, "stat")); err == nil {
		// Fields after the parenthesised comm; "processor" is field 39.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			if f := strings.Fields(string(b[i+1:])); len(f) > 36 {
				last = f[36]
			}
		}
	}
	return "cpus=" + allowed + " last=" + last
}

// hugeFree sums /proc/buddyinfo's free blocks of order 9 (2 MiB) and
// above, for NETBENCH_THREADS=1.
func hugeFree() string {
	b, err := os.ReadFile("/proc/buddyinfo")
	if err != nil {
		return "buddyinfo: " + err.Error()
	}
	var blocks uint64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 4+11 {
			continue
		}
		orders := f[4:] // "Node 0, zone Normal" then counts for orders 0..10
		for o := 9; o < len(orders); o++ {
			blocks += atou(orders[o]) << (o - 9)
		}
	}
	return fmt.Sprintf("free 2 MiB blocks %d", blocks)
}
