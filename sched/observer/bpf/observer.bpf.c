// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
// colibri's scheduling observer: per watched thread, its run state and
// cumulative run/wait times and event counts in an mmapable array the
// scheduler reads with plain loads; log2 histograms of runqueue latency (µs)
// per watched thread and per CPU; a count of foreign threads switched in on
// managed CPUs.
//
// Kernel fields read (CO-RE; present in Debian's 6.1 and 6.12 kernels):
// task_struct.pid, tgid, __state, on_cpu, thread_info.cpu.
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

// One watched thread. seq is odd while the record is being written. The
// events of one task are serialised by the kernel (its runqueue lock, or
// they run on its own CPU with interrupts off), so one writer at a time.
// Padded to two cache lines so that neighbouring slots, written from
// different CPUs, do not share one.
struct slot_state {
	__u32 seq;
	__u32 tid;
	__u32 state;
	__s32 cpu;
	__u64 since;          // bpf_ktime_get_ns() when state was entered
	__u64 switches;       // times switched in
	__u64 wait_ns;        // total ns runnable before being switched in
	__u64 run_ns;         // total ns running, up to the last switch out
	__u64 preempts;       // switched out while still runnable
	__u64 wakeups;        // made runnable from sleeping by a wakeup
	__u64 wakeups_on_cpu; // woken while still on its CPU (stays running)
	__u64 _pad[7];
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

static __always_inline struct slot_state *slot_rec(__u32 slot)
{
	return bpf_map_lookup_elem(&slots, &slot);
}

static __always_inline void write_begin(struct slot_state *st)
{
	__sync_fetch_and_add(&st->seq, 1);
}

static __always_inline void write_end(struct slot_state *st)
{
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

// A wakeup (try_to_wake_up, or a new task's first enqueue). The kernel also
// reports a wakeup of a task that is still on its CPU: one that set itself
// TASK_(UN)INTERRUPTIBLE and was woken before it called schedule(), or that
// woke itself (p == current); it then goes on running and no sched_switch
// follows. p->on_cpu tells: under the runqueue lock the wakeup of a queued
// task holds, it is 1 exactly while p is its CPU's current task, and a task
// that did leave its CPU is only woken once on_cpu is 0. (p->on_rq does not
// tell: a running task is queued too, and from 6.12 on a sleeping task may
// stay queued, "delayed dequeue".)
static __always_inline int on_wakeup(struct task_struct *p)
{
	__u32 tid = BPF_CORE_READ(p, pid);
	int on_cpu = BPF_CORE_READ(p, on_cpu);
	struct slot_state *st;
	__u64 now;
	int slot;

	if (!tid)
		return 0;
	now = bpf_ktime_get_ns();
	slot = slot_of(tid);
	if (slot < 0) {
		// An unwatched task still on its CPU is not queued anew.
		if (!on_cpu && counted(p))
			bpf_map_update_elem(&start, &tid, &now, BPF_ANY);
		return 0;
	}
	st = slot_rec(slot);
	if (!st)
		return 0;
	write_begin(st);
	if (on_cpu) {
		st->wakeups_on_cpu++;
		if (st->state != ST_RUNNING) {
			// Seen running for the first time since Watch.
			st->state = ST_RUNNING;
			st->cpu = task_cpu(p);
			st->since = now;
		}
	} else if (st->state != ST_RUNNABLE) {
		// Preempted earlier and still queued: it waits since then.
		st->state = ST_RUNNABLE;
		st->cpu = task_cpu(p);
		st->since = now;
		st->wakeups++;
	}
	write_end(st);
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
	// Still queued: preempted, or switched out without blocking (the
	// kernel dequeues only a task that is not TASK_RUNNING by the time
	// __schedule looks, and never on preemption).
	bool queued = preempt || pstate == TASK_RUNNING;
	struct slot_state *st;
	int slot;

	// The thread leaving the CPU.
	slot = ptid ? slot_of(ptid) : -1;
	if (slot >= 0) {
		st = slot_rec(slot);
		if (st) {
			write_begin(st);
			if (st->state == ST_RUNNING && now > st->since)
				st->run_ns += now - st->since;
			if (queued)
				st->preempts++;
			st->state = queued ? ST_RUNNABLE : ST_SLEEPING;
			st->cpu = cpu;
			st->since = now;
			write_end(st);
		}
	} else if (ptid && queued && counted(prev)) {
		bpf_map_update_elem(&start, &ptid, &now, BPF_ANY);
	}

	if (!ntid)
		return 0;
	slot = slot_of(ntid);
	if (slot >= 0) {
		st = slot_rec(slot);
		if (!st)
			return 0;
		write_begin(st);
		if (st->state == ST_RUNNABLE && now > st->since) {
			__u64 d = now - st->since;

			st->wait_ns += d;
			hist_add(&slot_hist, slot, d);
			hist_add(&cpu_hist, cpu, d);
		}
		st->state = ST_RUNNING;
		st->cpu = cpu;
		st->since = now;
		st->switches++;
		write_end(st);
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
