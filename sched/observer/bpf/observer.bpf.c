// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
// colibri's scheduling observer: per watched thread, its run state in an
// mmapable array the scheduler reads with plain loads; log2 histograms of
// runqueue latency (µs) per watched thread and per CPU; a count of foreign
// threads switched in on managed CPUs.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define MAX_SLOTS 1024
#define MAX_CPUS 1024
#define NBUCKETS 32
#define TASK_RUNNING 0

// Run states, as sched.RunState numbers them.
#define ST_SLEEPING 1
#define ST_RUNNABLE 2
#define ST_RUNNING 3

// One watched thread. seq is odd while the record is being written.
struct slot_state {
	__u32 seq;
	__u32 tid;
	__u32 state;
	__s32 cpu;
	__u64 since; // bpf_ktime_get_ns() when state was entered
	__u64 switches;
};

struct hist {
	__u32 slots[NBUCKETS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct slot_state);
} slots SEC(".maps");

// Watched thread id → slot.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct hist);
} slot_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CPUS);
	__type(key, __u32);
	__type(value, struct hist);
} cpu_hist SEC(".maps");

// CPU → 1 if managed by the scheduler.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CPUS);
	__type(key, __u32);
	__type(value, __u32);
} managed SEC(".maps");

// CPU → number of times a non-watched, non-idle thread was switched in on
// it while it was managed.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CPUS);
	__type(key, __u32);
	__type(value, __u64);
} foreign SEC(".maps");

// Unwatched threads counted in the per-CPU histograms: when they became
// runnable.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} start SEC(".maps");

// Process ids (tgids) whose threads the per-CPU histograms count even if
// not watched.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} tgids SEC(".maps");

// Set at load time: count every thread in the per-CPU histograms.
const volatile bool trace_all = false;

static __always_inline int slot_of(__u32 tid)
{
	__u32 *s = bpf_map_lookup_elem(&watched, &tid);
	return s ? (int)*s : -1;
}

static __always_inline bool counted(struct task_struct *p)
{
	__u32 tgid;

	if (trace_all)
		return true;
	tgid = BPF_CORE_READ(p, tgid);
	return bpf_map_lookup_elem(&tgids, &tgid) != NULL;
}

static __always_inline void set_state(__u32 slot, __u32 state, __s32 cpu, __u64 now, bool switched)
{
	struct slot_state *st = bpf_map_lookup_elem(&slots, &slot);

	if (!st)
		return;
	__sync_fetch_and_add(&st->seq, 1);
	st->state = state;
	st->cpu = cpu;
	st->since = now;
	if (switched)
		st->switches++;
	__sync_fetch_and_add(&st->seq, 1);
}

static __always_inline void hist_add(void *map, __u32 key, __u64 delta_ns)
{
	struct hist *h = bpf_map_lookup_elem(map, &key);
	__u64 us = delta_ns / 1000;
	__u32 b = 0;

	if (!h)
		return;
	// log2, as libbpf-tools' runqlat buckets: 0 is [0,1)µs, b is [2^(b-1), 2^b).
	while (us && b < NBUCKETS - 1) {
		us >>= 1;
		b++;
	}
	__sync_fetch_and_add(&h->slots[b & (NBUCKETS - 1)], 1);
}

static __always_inline __s32 task_cpu(struct task_struct *p)
{
	return BPF_CORE_READ(p, thread_info.cpu);
}

static __always_inline int on_wakeup(struct task_struct *p)
{
	__u32 tid = BPF_CORE_READ(p, pid);
	__u64 now;
	int slot;

	if (!tid)
		return 0;
	now = bpf_ktime_get_ns();
	slot = slot_of(tid);
	if (slot >= 0) {
		set_state(slot, ST_RUNNABLE, task_cpu(p), now, false);
		return 0;
	}
	if (counted(p))
		bpf_map_update_elem(&start, &tid, &now, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(sched_wakeup, struct task_struct *p)
{
	return on_wakeup(p);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(sched_wakeup_new, struct task_struct *p)
{
	return on_wakeup(p);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 now = bpf_ktime_get_ns();
	__u32 ptid = BPF_CORE_READ(prev, pid);
	__u32 ntid = BPF_CORE_READ(next, pid);
	long pstate = BPF_CORE_READ(prev, __state);
	int slot;

	// The thread leaving the CPU: still runnable if preempted.
	slot = ptid ? slot_of(ptid) : -1;
	if (slot >= 0)
		set_state(slot, pstate == TASK_RUNNING ? ST_RUNNABLE : ST_SLEEPING, cpu, now, false);
	else if (ptid && pstate == TASK_RUNNING && counted(prev))
		bpf_map_update_elem(&start, &ptid, &now, BPF_ANY);

	if (!ntid)
		return 0;
	slot = slot_of(ntid);
	if (slot >= 0) {
		__u32 key = slot;
		struct slot_state *st = bpf_map_lookup_elem(&slots, &key);

		if (st && st->state == ST_RUNNABLE && now > st->since) {
			hist_add(&slot_hist, key, now - st->since);
			hist_add(&cpu_hist, cpu, now - st->since);
		}
		set_state(slot, ST_RUNNING, cpu, now, true);
		return 0;
	}

	__u32 *m = bpf_map_lookup_elem(&managed, &cpu);
	if (m && *m) {
		__u64 *f = bpf_map_lookup_elem(&foreign, &cpu);
		if (f)
			__sync_fetch_and_add(f, 1);
	}
	__u64 *tsp = bpf_map_lookup_elem(&start, &ntid);
	if (tsp) {
		if (now > *tsp)
			hist_add(&cpu_hist, cpu, now - *tsp);
		bpf_map_delete_elem(&start, &ntid);
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
