package host

import "testing"

func TestEventsFanOutAndLoss(t *testing.T) {
	var e events
	fast, slow := e.subscribe(), e.subscribe()
	for i := 0; i < eventBuffer+10; i++ {
		e.publish(Event{Type: EventState, VM: "a"})
		// The fast subscriber keeps up.
		ev := <-fast.C()
		if ev.Seq != uint64(i+1) || ev.Type != EventState {
			t.Fatalf("event %d: got %+v", i, ev)
		}
	}
	// slow read nothing: it has a full buffer and lost the rest.
	var n int
	for len(slow.C()) > 0 {
		<-slow.C()
		n++
	}
	if n != eventBuffer {
		t.Fatalf("slow subscriber had %d buffered events, want %d", n, eventBuffer)
	}
	e.publish(Event{Type: EventDeleted, VM: "a"})
	lost := <-slow.C()
	if lost.Type != EventLost || lost.Lost != 10 {
		t.Fatalf("want a lost-10 notice, got %+v", lost)
	}
	if next := <-slow.C(); next.Type != EventDeleted {
		t.Fatalf("after the notice: %+v", next)
	}
	slow.Close()
	slow.Close()
	if _, ok := <-slow.C(); ok {
		t.Fatal("closed subscription still delivers")
	}
	e.closeAll()
	if ev := <-fast.C(); ev.Type != EventDeleted {
		t.Fatalf("fast subscriber: got %+v, want the deleted event", ev)
	}
	if _, ok := <-fast.C(); ok {
		t.Fatal("closeAll left a subscription open")
	}
	e.publish(Event{Type: EventCreated}) // no subscribers: no panic
}
