// Package seccomp confines colibri's threads with seccomp filters: one
// list of allowed system calls per kind of thread, as Firecracker has
// (vCPU threads, pollers, the scheduler, the rest), installed once setup
// is done. A system call outside a thread's list stops the process.
//
// # How the filters stack
//
// [Install] puts the process-wide list ([Process], "the rest") on every
// thread of the process at once (SECCOMP_FILTER_FLAG_TSYNC) and sets
// no_new_privs on all of them. Threads created later inherit it from the
// thread that creates them. A thread that colibri locks to one goroutine
// for its whole life (runtime.LockOSThread, never unlocked: vCPU threads,
// pollers, the scheduler) then calls [Thread] with its kind, which stacks
// that kind's stricter list on that thread alone. The kernel runs every
// filter of a thread and the strictest answer wins, so a locked thread
// may make only the calls both lists allow. Thread does nothing in a
// process where Install did not run (tests, --seccomp=off).
//
// TSYNC refuses to run while any thread has a filter that is not an
// ancestor of the caller's, so Install must come before any Thread call:
// the host installs the process list before it starts its pollers and
// scheduler, and vCPU threads start after it.
//
// # Why a locked thread's filter never reaches another goroutine
//
// A per-thread filter is sound only on a thread that runs one goroutine
// for its whole life, and only if no thread that later serves other
// goroutines is created from it (a new thread inherits its creator's
// filters). Checked against Go 1.26's runtime (proc.go): a goroutine that
// calls LockOSThread stays alone on its M; when it exits still locked,
// the M exits with it (the main thread, m0, is wedged instead: it never
// runs anything again, which is why every such goroutine is started with
// internal/osthread, which keeps it off m0). When the runtime needs a new M while running on
// a locked one (newm with m.lockedExt != 0, or a thread from C), it does
// not clone the locked thread: it queues the request for the template
// thread, which LockOSThread started beforehand from a thread in a
// known-good state (startTemplateThread), and the template thread clones
// it. So pool threads are always cloned from threads that carry only the
// process-wide filter.
//
// # What happens on a forbidden call
//
// The default action is [Trap] (as Firecracker's default_action "trap"):
// the kernel does not run the call and sends SIGSYS to the thread. Go's
// runtime treats a SIGSYS nobody asked for as fatal: it prints "SIGSYS:
// bad system call", the PC and the goroutine's stack (the call site), and
// exits with status 2; if the report itself hits another forbidden call,
// the kernel kills the process with SIGSYS. The kernel also logs the
// system call's number (an audit record, type 1326, in the kernel log)
// unless kernel.seccomp.actions_logged leaves trap out. [Kill] kills the
// process at once (SECCOMP_RET_KILL_PROCESS); [Log] allows everything and
// logs what a list would have refused: the way to find what a list
// misses.
//
// # How a list becomes a filter
//
// The package compiles its lists itself (compile.go; amd64 only): a list
// is a rule per system call, by name (numbers from a table generated from
// golang.org/x/sys/unix's SYS_* constants, zsysnum_amd64.go), allowed
// always or when one of its condition sets holds, each set a conjunction
// of tests on 64-bit arguments (equal, bits clear, any bit set), each
// test made on the argument's high 32-bit word and then its low word.
// The classic BPF program checks the arch (anything but x86-64 kills the
// process), answers ENOSYS to x32 calls, tests ioctl first (vCPU threads
// make one per VM exit), then finds any other call with a binary search
// on its number over the ranges of numbers that share an outcome, and
// runs the call's conditions if it has any. A call whose conditions all
// fail meets the default action, as one no rule names does. Jumps that
// would go further than a conditional jump reaches (255 instructions) go
// through long jumps; the program is checked as the kernel will (at most
// 4096 instructions, jumps forward and in range, loads inside
// seccomp_data) before it is installed.
package seccomp

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

//go:generate go run gen_sysnum.go

// Kind is a kind of colibri thread; each has its own list of allowed
// system calls.
type Kind int

const (
	// Process is the process-wide list: every thread has it, and it is
	// all that threads moving between goroutines (Go's thread pool, the
	// API server, device workers, console and signal handling) have.
	Process Kind = iota
	// VCPU is a vCPU thread after its setup: KVM_RUN and the devices'
	// register handlers that run on it.
	VCPU
	// Poller is a netstack poller thread.
	Poller
	// Scheduler is the central scheduler's thread.
	Scheduler
	numKinds
)

var kindNames = [...]string{Process: "process", VCPU: "vcpu", Poller: "poller", Scheduler: "scheduler"}

func (k Kind) String() string {
	if k >= 0 && k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Kinds lists every kind of thread.
func Kinds() []Kind { return []Kind{Process, VCPU, Poller, Scheduler} }

// Action is what the kernel does with a system call outside a list.
type Action int

const (
	// Trap refuses the call and sends SIGSYS: Go's runtime reports it
	// with the goroutine's stack and exits with status 2.
	Trap Action = iota
	// Kill kills the process with SIGSYS at once.
	Kill
	// Log allows the call and logs it in the kernel's audit log.
	Log
)

func (a Action) String() string {
	switch a {
	case Trap:
		return "trap"
	case Kill:
		return "kill"
	case Log:
		return "log"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// ParseAction parses an action's name (trap, kill, log).
func ParseAction(s string) (Action, error) {
	for _, a := range []Action{Trap, Kill, Log} {
		if a.String() == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown seccomp action %q (want trap, kill or log)", s)
}

// IDs are a user and a group id.
type IDs struct {
	UID, GID int
}

// Options shape the filters of a process.
type Options struct {
	// Action is what a call outside a list meets (default Trap).
	Action Action
	// DropTo, if set, are the ids the process switches to after the
	// filters are in place (internal/privdrop). Every list then also
	// allows what that switch runs on each thread and nothing more:
	// setresuid and setresgid to exactly these ids, setgroups with an
	// empty list, capget and capset (which can only lower capabilities).
	DropTo *IDs
	// API lets the process-wide list serve a Unix socket (socket of
	// AF_UNIX, bind, listen, accept4, ...), as the agent's API needs.
	API bool
}

// installed holds the options of the process-wide filter once Install
// has put it in place. It mirrors process-wide kernel state (a filter on
// every thread cannot be taken off), so it is written once and never
// reset.
var installed atomic.Pointer[installState]

type installState struct {
	opts Options
	pid  int
	// progs are the thread kinds' filters, assembled by Install so that
	// Thread only loads one.
	progs [numKinds]*unix.SockFprog
}

// ErrInstalled is Install's error when the process already has its
// filter.
var ErrInstalled = errors.New("seccomp: the process-wide filter is already installed")

// Install puts the process-wide list on every thread of the process and
// records opts for the threads that call Thread later. It can be called
// once per process.
func Install(opts Options) error {
	st := &installState{opts: opts, pid: os.Getpid()}
	for _, k := range Kinds() {
		prog, err := assemble(k, opts, st.pid)
		if err != nil {
			return err
		}
		st.progs[k] = prog
	}
	if !installed.CompareAndSwap(nil, st) {
		return ErrInstalled
	}
	if err := load(st.progs[Process], unix.SECCOMP_FILTER_FLAG_TSYNC); err != nil {
		installed.Store(nil)
		return fmt.Errorf("seccomp: install the process-wide filter: %w", err)
	}
	return nil
}

// Installed reports whether Install has put the process-wide filter in
// place, and with which options.
func Installed() (Options, bool) {
	st := installed.Load()
	if st == nil {
		return Options{}, false
	}
	return st.opts, true
}

// Thread stacks kind k's list on the calling thread. The caller must be
// a goroutine locked to its thread (runtime.LockOSThread) that never
// unlocks it: the filter stays on the thread for its whole life. Thread
// does nothing unless Install ran.
func Thread(k Kind) error {
	st := installed.Load()
	if st == nil {
		return nil
	}
	if k <= Process || k >= numKinds {
		return fmt.Errorf("seccomp: %v is not a thread kind", k)
	}
	if err := load(st.progs[k], 0); err != nil {
		return fmt.Errorf("seccomp: install the %v filter on thread %d: %w", k, unix.Gettid(), err)
	}
	return nil
}

// load installs prog on the calling thread (every thread with TSYNC).
func load(prog *unix.SockFprog, flags uintptr) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	r, e := seccompFilter(flags, prog)
	if e != 0 {
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): %w", e)
	}
	if flags&unix.SECCOMP_FILTER_FLAG_TSYNC != 0 && r != 0 {
		// TSYNC returns the id of a thread it could not synchronise: one
		// with a filter of its own already.
		return fmt.Errorf("thread %d has a filter of its own: install the process-wide filter before any thread filter", r)
	}
	return nil
}

// policy returns kind k's filter under opts: what Install compiles.
func policy(k Kind, opts Options, pid int) (filter, error) {
	if k < 0 || k >= numKinds {
		return filter{}, fmt.Errorf("seccomp: unknown thread kind %d", int(k))
	}
	f := filter{kind: k}
	switch opts.Action {
	case Trap:
		f.def = unix.SECCOMP_RET_TRAP
	case Kill:
		f.def = unix.SECCOMP_RET_KILL_PROCESS
	case Log:
		f.def = unix.SECCOMP_RET_LOG
	default:
		return filter{}, fmt.Errorf("seccomp: unknown action %d", int(opts.Action))
	}
	rules, err := merge(list(k, opts, pid))
	if err != nil {
		return filter{}, fmt.Errorf("seccomp: the %v list: %w", k, err)
	}
	f.rules = rules
	return f, nil
}

// assemble builds kind k's filter program.
func assemble(k Kind, opts Options, pid int) (*unix.SockFprog, error) {
	f, err := policy(k, opts, pid)
	if err != nil {
		return nil, err
	}
	prog, err := f.compile()
	if err != nil {
		return nil, err
	}
	return &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}, nil
}
