package netstack

import (
	"runtime"
	"sync/atomic"
	"time"
)

// slotLock is the lock pollers take to deliver into an endpoint: a ticket
// lock, so pollers get it in the order they asked for it. A poller that
// lets go of it because another waits (poller.yieldLock) and asks again
// at its next frame queues behind the waiter instead of taking it back
// first, as it could with a sync.Mutex. Uncontended, lock and unlock are
// one locked instruction each. Waiters spin, then yield, then sleep: the
// holder keeps it only for one frame's delivery while they wait.
type slotLock struct {
	next    atomic.Uint32 // tickets handed out
	serving atomic.Uint32 // ticket that holds the lock
}

func (l *slotLock) lock() {
	t := l.next.Add(1) - 1
	for spins := 0; l.serving.Load() != t; spins++ {
		switch {
		case spins < 128:
		case spins < 1024:
			runtime.Gosched()
		default:
			time.Sleep(time.Microsecond)
		}
	}
}

func (l *slotLock) unlock() { l.serving.Add(1) }

// waiters returns how many pollers wait for the lock.
func (l *slotLock) waiters() uint32 {
	s := l.serving.Load()
	if n := l.next.Load() - s; n > 1 {
		return n - 1
	}
	return 0
}
