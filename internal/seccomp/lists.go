package seccomp

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// rule lets one system call through: always (no sets) or when any one
// of its condition sets holds. With errno set the call does not run but
// fails with that error instead.
type rule struct {
	name  string
	sets  []conds
	errno unix.Errno
}

// conds is a condition set: all of them must hold.
type conds []cond

// cond is a test on one of a call's six 64-bit arguments.
type cond struct {
	arg int // 0 to 5
	op  op
	val uint64
}

// op is what a cond tests.
type op uint8

const (
	opEq        op = iota + 1 // the argument is val
	opBitsClear               // none of val's bits is set in the argument
	opBitsAny                 // at least one of val's bits is set in the argument
)

func (o op) String() string {
	switch o {
	case opEq:
		return "=="
	case opBitsClear:
		return "&^"
	case opBitsAny:
		return "&"
	}
	return fmt.Sprintf("op(%d)", int(o))
}

func allow(names ...string) []rule {
	rs := make([]rule, len(names))
	for i, n := range names {
		rs[i] = rule{name: n}
	}
	return rs
}

// when allows name when any one of sets holds.
func when(name string, sets ...conds) rule {
	return rule{name: name, sets: sets}
}

// eq: argument arg is v (all 64 bits).
func eq(arg int, v uint64) cond { return cond{arg: arg, op: opEq, val: v} }

// bitsClear: none of v's bits is set in argument arg.
func bitsClear(arg int, v uint64) cond { return cond{arg: arg, op: opBitsClear, val: v} }

// bitsAny: at least one of v's bits is set in argument arg.
func bitsAny(arg int, v uint64) cond { return cond{arg: arg, op: opBitsAny, val: v} }

// anyOf is a condition set per value: argument arg equal to one of vs.
func anyOf(arg int, vs ...uint64) []conds {
	sets := make([]conds, len(vs))
	for i, v := range vs {
		sets[i] = conds{eq(arg, v)}
	}
	return sets
}

// ioctlType is the condition "the ioctl request's type byte (bits 8-15)
// is t": each of t's one bits set, every other bit of the byte clear.
// bitsAny means "any of these bits", so one condition per bit.
func ioctlType(t uint8) conds {
	var c conds
	for b := 0; b < 8; b++ {
		if t&(1<<b) != 0 {
			c = append(c, bitsAny(1, uint64(1)<<(8+b)))
		}
	}
	return append(c, bitsClear(1, uint64(^t)<<8))
}

// KVM ioctl requests (include/uapi/linux/kvm.h, KVMIO = 0xAE) that a
// vCPU thread makes once it runs: _IO/_IOR/_IOW(0xAE, nr, size).
const (
	kvmRun          = 0xae80     // _IO(KVMIO, 0x80)
	kvmGetRegs      = 0x8090ae81 // _IOR(KVMIO, 0x81, struct kvm_regs): crash reports
	kvmGetSregs     = 0x8138ae83 // _IOR(KVMIO, 0x83, struct kvm_sregs): crash reports
	kvmKVMClockCtrl = 0xaead     // _IO(KVMIO, 0xad): after a pause
	kvmIRQLine      = 0x4008ae61 // _IOW(KVMIO, 0x61, struct kvm_irq_level): the UART's interrupt
	kvmSetGSIRoute  = 0x4008ae6a // _IOW(KVMIO, 0x6a, struct kvm_irq_routing): MSI-X table writes
	kvmIRQFD        = 0x4020ae76 // _IOW(KVMIO, 0x76, struct kvm_irqfd): MSI-X vectors, device (de)activation
	kvmIOEventFD    = 0x4040ae79 // _IOW(KVMIO, 0x79, struct kvm_ioeventfd): virtio DRIVER_OK and reset
)

// Linux ioctl types the process-wide list allows.
const (
	ioctlKVM     = 0xae // KVMIO: creating VMs (restarts, the agent), their vCPUs, stats
	ioctlTTY     = 'T'  // TCGETS/TCSETS (the console terminal), FIONBIO, and TUN's TUNSET* (also 'T')
	ioctlBlock   = 0x12 // BLKGETSIZE64: a disk on a block device, opened by a new VM
	ioctlSockets = 0x89 // SIOCGIFINDEX and friends on sockets
)

// Flags of clone(2) that Go's runtime (and glibc's pthread_create) pass:
// a new thread, never a new process.
const cloneThread = unix.CLONE_THREAD

// runtimeRules are what Go's runtime needs on any thread that runs Go
// code: memory (never executable: nothing in colibri maps code at run
// time), futexes and sleeps, signals (preemption is SIGURG sent with
// tgkill to a thread of this process; the handlers return with
// rt_sigreturn), the netpoller (polled by whichever thread starts the
// world again after a GC stop, a locked one included), thread exit
// (sigaltstack and rt_sigprocmask as an M leaves, exit), and writes to
// stderr for its reports. clock_gettime and gettimeofday are served by
// the vDSO; the syscalls are the fallback. Go 1.25+ names its anonymous
// mappings with prctl(PR_SET_VMA). A thread that a cgo build created
// with pthread_create also runs glibc's thread exit (madvise, munmap,
// rseq, set_robust_list at start).
func runtimeRules(pid int) []rule {
	rs := allow(
		"futex", "sched_yield", "nanosleep", "clock_nanosleep", "clock_gettime", "gettimeofday",
		"restart_syscall", "munmap", "madvise", "brk", "mremap",
		"rt_sigreturn", "rt_sigprocmask", "sigaltstack",
		"getpid", "gettid", "exit", "exit_group",
		"write", "epoll_pwait", "epoll_wait", "set_robust_list", "rseq",
	)
	return append(rs,
		when("mmap", conds{bitsClear(2, unix.PROT_EXEC)}),
		when("mprotect", conds{bitsClear(2, unix.PROT_EXEC)}),
		// Signals only to this process's own threads.
		when("tgkill", conds{eq(0, uint64(pid))}),
		when("prctl", anyOf(0, unix.PR_SET_VMA)...),
	)
}

// dropRules let the privilege drop (internal/privdrop), which runs the
// same calls on every thread, through a thread's filter: only to the ids
// it drops to.
func dropRules(to *IDs) []rule {
	if to == nil {
		return nil
	}
	u, g := uint64(uint32(to.UID)), uint64(uint32(to.GID))
	return []rule{
		when("setresuid", conds{eq(0, u), eq(1, u), eq(2, u)}),
		when("setresgid", conds{eq(0, g), eq(1, g), eq(2, g)}),
		when("setgroups", conds{eq(0, 0)}),
		rule{name: "capget"}, rule{name: "capset"},
	}
}

// list returns kind k's rules.
func list(k Kind, opts Options, pid int) []rule {
	var rs []rule
	switch k {
	case Process:
		rs = processRules(opts.API)
	case VCPU:
		rs = vcpuRules()
	case Poller:
		rs = pollerRules()
	case Scheduler:
		rs = schedulerRules()
	}
	rs = append(rs, runtimeRules(pid)...)
	return append(rs, dropRules(opts.DropTo)...)
}

// vcpuRules: after its setup a vCPU thread loops on KVM_RUN and, on each
// exit to userspace, runs the register handler of the device the guest
// touched. Those handlers reach: the UART (console writes, KVM_IRQ_LINE),
// the PCI and MSI-X registers (KVM_SET_GSI_ROUTING, KVM_IRQFD), virtio's
// common configuration (DRIVER_OK: eventfds, KVM_IOEVENTFD and KVM_IRQFD,
// worker goroutines; a reset: those undone and closed; virtio-net: its
// queues attached to netstack, epoll_ctl on a poller's epoll and a write
// to its control eventfd), the ACPI and i8042 registers (the VM stops:
// tgkill to kick the other vCPUs). After a pause it calls
// KVM_KVMCLOCK_CTRL; on a crash KVM_GET_REGS/SREGS; as it ends it reads
// its KVM stats (pread64), unmaps kvm_run and closes its fds; os.NewFile
// on a queue's kick eventfd (at DRIVER_OK) reads its flags with fcntl.
// It never opens a file, a socket or a process.
func vcpuRules() []rule {
	return append(allow(
		"read", "pread64", "close", "eventfd2", "epoll_ctl",
	),
		// os.NewFile on a queue's kick eventfd asks whether it is
		// non-blocking.
		when("fcntl", anyOf(1, unix.F_GETFL, unix.F_SETFL)...),
		when("ioctl", anyOf(1, kvmRun, kvmIRQLine, kvmIRQFD, kvmIOEventFD, kvmSetGSIRoute,
			kvmKVMClockCtrl, kvmGetRegs, kvmGetSregs)...),
	)
}

// pollerRules: a poller reads and writes eventfds (guest kicks, its
// control eventfd, KVM irqfds), a TAP's fd, and kicks an AF_XDP socket
// (sendto, recvfrom with no buffer); it sleeps in epoll_wait. Its
// endpoints' guest memory and the AF_XDP rings are mapped before it runs.
func pollerRules() []rule {
	return allow("read", "write", "readv", "writev", "sendto", "recvfrom", "epoll_ctl")
}

// schedulerRules: after its setup (affinity, SCHED_FIFO, timer slack)
// the scheduler thread moves vCPU threads (sched_setaffinity), kicks them
// (tgkill), parks and unparks them (futexes), sleeps between passes
// (clock_nanosleep) and reads its own CPU time (getrusage). The eBPF
// observer's state it reads with plain loads from a mapped array.
func schedulerRules() []rule {
	return allow("sched_setaffinity", "getrusage")
}

// processRules: the process-wide list, which the Go runtime's pool
// threads have. Goroutines move between those threads, so this list must
// allow whatever any goroutine that is not locked does after setup:
// device workers (virtio-blk: pread64/pwrite64/preadv/pwritev/fsync/
// fdatasync on its image; virtio-rng: getrandom), console input and
// output (read/write, the terminal's ioctls), signal handling
// (rt_sigaction for signal.Notify), the host's lifecycle: a VM created
// or restarted after setup opens its kernel, initrd and disks (open,
// flock, fstat), makes its memory (memfd_create, ftruncate, fallocate,
// mmap) and its VM and vCPUs (KVM ioctls), writes its console file; its
// cgroup is created and threads moved in (mkdirat, openat, write,
// unlinkat to remove it); the scheduler's observer is told about new
// vCPU threads (bpf map updates only: no program or map is created after
// setup); the kernel cache is filled on a thread of the lowest priority
// (setpriority, files written and renamed); the datapath's statistics
// are read (getsockopt). New threads are threads of this process
// (clone with CLONE_THREAD). What it leaves out is what a compromised
// VMM would want: execve, ptrace, new sockets (unless the API is served),
// mount, namespaces, module loading, bpf programs, keyrings, kexec,
// reboot, executable memory.
func processRules(api bool) []rule {
	rs := allow(
		// files
		"read", "readv", "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "writev",
		"open", "openat", "close", "close_range", "lseek", "fstat", "newfstatat", "stat", "lstat", "statx",
		"fsync", "fdatasync", "fcntl", "flock", "ftruncate", "fallocate", "getdents64",
		"readlink", "readlinkat", "unlink", "unlinkat", "rmdir", "mkdir", "mkdirat",
		"rename", "renameat", "renameat2", "fchmod", "fchmodat", "fchown", "fchownat",
		"utimensat", // the kernel cache marks an entry it used (os.Chtimes)
		"access", "faccessat", "faccessat2", "getcwd", "dup", "dup3", "pipe2",
		// which filesystem a path is on (procfs, cgroup2), read only
		"statfs", "fstatfs",
		"copy_file_range", "sendfile",
		"memfd_create", "eventfd2", "epoll_create1", "epoll_ctl", "poll", "ppoll",
		// sockets made at setup (TAP, AF_XDP, netlink): used, never made
		"sendto", "recvfrom", "sendmsg", "recvmsg", "getsockopt", "setsockopt", "getsockname",
		// threads and scheduling
		"sched_getaffinity", "sched_setaffinity", "sched_getattr", "sched_setattr",
		"getpriority", "setpriority", "getrusage",
		"rt_sigaction",
		// identity and limits, read only
		"getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "getppid",
		"capget", "uname", "sysinfo", "prlimit64", "getrlimit", "getrandom",
	)
	rs = append(rs,
		when("clone", conds{bitsAny(0, cloneThread)}),
		when("ioctl", ioctlType(ioctlKVM), ioctlType(ioctlTTY), ioctlType(ioctlBlock), ioctlType(ioctlSockets)),
		// The observer's maps: look up, update, delete, iterate, info.
		when("bpf", anyOf(0, unix.BPF_MAP_LOOKUP_ELEM, unix.BPF_MAP_UPDATE_ELEM, unix.BPF_MAP_DELETE_ELEM,
			unix.BPF_MAP_GET_NEXT_KEY, unix.BPF_OBJ_GET_INFO_BY_FD)...),
		// Stacking a thread's filter (flags 0: no TSYNC, no listener).
		when("seccomp", conds{eq(0, unix.SECCOMP_SET_MODE_FILTER), eq(1, 0)}),
		when("prctl", anyOf(0, prctlOptions...)...),
		// glibc's pthread_create (cgo builds) tries clone3 first, whose
		// flags a filter cannot read (they are in memory): answer ENOSYS
		// so that it falls back to clone, whose flags the list checks.
		rule{name: "clone3", errno: unix.ENOSYS},
	)
	if api {
		rs = append(rs, allow("bind", "listen", "accept4", "accept", "getpeername", "shutdown")...)
		rs = append(rs, when("socket", conds{eq(0, unix.AF_UNIX)}))
	}
	return rs
}

// prctlOptions are the prctl options the process-wide list allows:
// thread names, timer slack (the scheduler), no_new_privs (stacking a
// filter), reading the seccomp mode, keepcaps and the bounding set (the
// privilege drop), PR_SET_VMA (the runtime's mapping names).
var prctlOptions = []uint64{
	unix.PR_SET_NAME, unix.PR_GET_NAME, unix.PR_SET_TIMERSLACK, unix.PR_GET_TIMERSLACK,
	unix.PR_SET_NO_NEW_PRIVS, unix.PR_GET_NO_NEW_PRIVS, unix.PR_GET_SECCOMP,
	unix.PR_GET_KEEPCAPS, unix.PR_SET_KEEPCAPS, unix.PR_CAPBSET_READ, unix.PR_CAPBSET_DROP,
	unix.PR_GET_DUMPABLE, unix.PR_SET_VMA,
}

// merge folds rules for one call into one: unconditional if any is,
// else the union of their condition sets. Order is kept, by first
// appearance. Rules for one call that answer differently (one allows it,
// another makes it fail) are a mistake in the lists.
func merge(rs []rule) ([]rule, error) {
	var out []rule
	at := map[string]int{}
	for _, r := range rs {
		i, ok := at[r.name]
		if !ok {
			at[r.name] = len(out)
			out = append(out, rule{name: r.name, sets: append([]conds(nil), r.sets...), errno: r.errno})
			continue
		}
		if out[i].errno != r.errno {
			return nil, fmt.Errorf("%s is both allowed and refused with an errno", r.name)
		}
		switch {
		case len(out[i].sets) == 0:
		case len(r.sets) == 0:
			out[i].sets = nil
		default:
			out[i].sets = append(out[i].sets, r.sets...)
		}
	}
	return out, nil
}
