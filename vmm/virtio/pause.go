package virtio

import "sync"

// gate keeps the transport's workers out of the device's Process while the
// device is paused. Its lock is held only to update the counts, never
// across Process.
type gate struct {
	mu     sync.Mutex
	cond   sync.Cond
	paused bool
	inside int // workers inside Process
}

func (g *gate) init() { g.cond.L = &g.mu }

// enter waits while the device is paused and then admits w into Process.
// It returns false, admitting nothing, once w has been stopped by a reset.
func (g *gate) enter(w *worker) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.paused && !w.stopped {
		g.cond.Wait()
	}
	if w.stopped {
		return false
	}
	g.inside++
	return true
}

// exit is called when a worker admitted by enter leaves Process.
func (g *gate) exit() {
	g.mu.Lock()
	g.inside--
	if g.inside == 0 {
		g.cond.Broadcast()
	}
	g.mu.Unlock()
}

// stop makes the workers' next enter fail, waking those that wait.
func (g *gate) stop(workers []*worker) {
	g.mu.Lock()
	for _, w := range workers {
		w.stopped = true
	}
	g.cond.Broadcast()
	g.mu.Unlock()
}

// Pause returns once no worker goroutine of this device is inside the
// device's Process, and none enters it until Resume. Kicks that arrive
// meanwhile are served after Resume. Queues the device serves itself
// (netdev's data queues, on netstack's pollers) are not the transport's:
// pause those where they are served. Pause may be called again while
// paused; Reset and Close work on a paused device (the device stays
// paused across a reset, and a new activation's workers wait too).
func (p *PCI) Pause() {
	g := &p.gate
	g.mu.Lock()
	g.paused = true
	for g.inside > 0 {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

// Resume lets the workers into Process again; kicks that came while the
// device was paused are served now.
func (p *PCI) Resume() {
	g := &p.gate
	g.mu.Lock()
	g.paused = false
	g.cond.Broadcast()
	g.mu.Unlock()
}

// Paused reports whether the device is paused.
func (p *PCI) Paused() bool {
	g := &p.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused
}
