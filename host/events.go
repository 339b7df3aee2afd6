package host

import (
	"sync"
	"time"
)

// EventType says what an Event reports.
type EventType string

// Event types.
const (
	// EventState is a VM's change of state.
	EventState EventType = "state"
	// EventCreated and EventDeleted report a VM added to or removed from
	// the host.
	EventCreated EventType = "created"
	EventDeleted EventType = "deleted"
	// EventRestarted reports a VM booted again after its guest rebooted
	// or crashed (its on_reboot or on_crash said restart).
	EventRestarted EventType = "restarted"
	// EventPolicy reports a change of the scheduling policy.
	EventPolicy EventType = "policy"
	// EventLost tells a subscriber that it fell behind and Lost events
	// were dropped for it.
	EventLost EventType = "lost"
)

// Event is something that happened on the host.
type Event struct {
	// Seq numbers the host's events from 1.
	Seq uint64 `json:"seq"`
	// Time is when it happened.
	Time time.Time `json:"time"`
	// Type says what happened.
	Type EventType `json:"type"`
	// VM is the VM concerned, if any.
	VM string `json:"vm,omitempty"`
	// State and Previous are the VM's new and former states (EventState).
	State    State `json:"state,omitempty"`
	Previous State `json:"previous,omitempty"`
	// Reason says why, in words (how a VM ended, the new policy).
	Reason string `json:"reason,omitempty"`
	// Lost is how many events were dropped (EventLost).
	Lost uint64 `json:"lost,omitempty"`
}

// eventBuffer is how many events a subscriber may fall behind by.
const eventBuffer = 256

// events fans the host's events out to subscribers. A subscriber that
// does not keep up loses events (and is told how many), never slows the
// host down.
type events struct {
	mu   sync.Mutex
	seq  uint64
	subs map[*Subscription]struct{}
}

// Subscription receives the host's events from the moment it was made.
type Subscription struct {
	ev *events
	c  chan Event
	// lost counts events dropped since the last one delivered; guarded by
	// events.mu.
	lost   uint64
	closed bool
}

// C delivers the events. It is closed by Close, and when the host closes.
func (s *Subscription) C() <-chan Event { return s.c }

// Close ends the subscription.
func (s *Subscription) Close() {
	s.ev.mu.Lock()
	defer s.ev.mu.Unlock()
	s.closeLocked()
}

func (s *Subscription) closeLocked() {
	if !s.closed {
		s.closed = true
		delete(s.ev.subs, s)
		close(s.c)
	}
}

func (e *events) subscribe() *Subscription {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := &Subscription{ev: e, c: make(chan Event, eventBuffer)}
	if e.subs == nil {
		e.subs = map[*Subscription]struct{}{}
	}
	e.subs[s] = struct{}{}
	return s
}

// publish stamps ev and hands it to every subscriber.
func (e *events) publish(ev Event) Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	ev.Seq = e.seq
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	for s := range e.subs {
		if s.lost > 0 {
			// Room for the notice and the event, or keep counting.
			if len(s.c) > cap(s.c)-2 {
				s.lost++
				continue
			}
			s.c <- Event{Seq: ev.Seq, Time: ev.Time, Type: EventLost, Lost: s.lost}
			s.lost = 0
		}
		select {
		case s.c <- ev:
		default:
			s.lost++
		}
	}
	return ev
}

// closeAll ends every subscription.
func (e *events) closeAll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for s := range e.subs {
		s.closeLocked()
	}
}
