// Package sched is colibri's central microsecond vCPU scheduler.
//
// One OS thread (see [Scheduler.Run]) loops every few microseconds over the
// vCPUs registered with it. Each pass it reads every vCPU's host run state
// from an [Observer] (the eBPF observer in sched/observer, read with plain
// loads), asks the current [Policy] what to do, and applies the resulting
// [Action]s through the [VCPU] interface: park (preempt), unpark, and pin to
// a core or let float over the managed cores (migrate).
//
// The scheduler sees vCPUs only through [VCPU]: the VMM's KVM vCPU threads
// and the synthetic thread vCPUs of sched/threadvcpu implement it, so the
// same policies drive both.
package sched
