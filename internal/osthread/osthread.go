// Package osthread runs a function on an OS thread of its own, a thread
// that exits when the function returns.
//
// A goroutine that changes its thread's kernel state (CPU affinity, a
// seccomp filter, a scheduling priority, a signal mask, KVM's per-thread
// state) locks itself to the thread and never unlocks it, so that the
// runtime ends the thread with the goroutine instead of handing the
// changed thread to other goroutines. That holds for every thread but the
// main one (m0): the runtime cannot end it, so a locked goroutine that
// exits on it leaves the thread wedged for the life of the process, still
// carrying what the goroutine changed — a leaked thread, and a thread id
// that outlives what it ran. A goroutine started with no lock runs on m0
// whenever the scheduler puts it there. Go never lets that happen to fn.
package osthread

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Go runs fn on a new goroutine locked to an OS thread that is not the
// process's main thread. fn runs locked and must not unlock the thread:
// when fn returns, the thread exits.
func Go(fn func()) {
	go run(fn)
}

func run(fn func()) {
	runtime.LockOSThread()
	if unix.Gettid() != unix.Getpid() {
		fn()
		return // still locked: the runtime ends the thread
	}
	// On the main thread. While this goroutine holds it locked and waits,
	// no other goroutine can run on it, so the one started here lands on
	// another thread; the main thread goes back to the pool after.
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(fn)
	}()
	<-done
	runtime.UnlockOSThread()
}

// SetName sets the calling thread's name (its comm, as top -H, ps -L and
// /proc/PID/task/TID/comm show it; the kernel keeps 15 bytes). Call it
// only from fn under Go: the name ends with the thread, where on a
// thread the runtime reuses it would stay on whatever runs there next.
func SetName(name string) {
	b := append([]byte(name), 0)
	_, _, _ = unix.Syscall6(unix.SYS_PRCTL, unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0, 0)
}
