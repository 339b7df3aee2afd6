// Package observer is colibri's eBPF view of the host scheduler. Programs
// on tp_btf/sched_wakeup, sched_wakeup_new and sched_switch keep, for each
// watched thread, its run state (running on CPU n, runnable since t,
// sleeping) in a BPF_F_MMAPABLE array that [Observer.Load] reads with plain
// loads — no system call per scheduling decision — together with its
// cumulative run and runqueue-wait times and its switch, preemption and
// wakeup counts ([Observer.Totals]). They also keep log2 histograms of
// runqueue latency per watched thread and per CPU, like libbpf-tools'
// runqlat, and count foreign (unwatched) threads switched in on the
// scheduler's managed CPUs.
//
// Loading needs root (CAP_BPF and CAP_PERFMON) and a kernel with BTF.
package observer
