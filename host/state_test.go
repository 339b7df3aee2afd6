package host

import (
	"errors"
	"testing"
)

func TestStateMachine(t *testing.T) {
	states := []State{StateCreated, StateRunning, StatePaused, StateStopping, StateStopped, StateFailed}
	want := map[Op][]State{
		OpStart:  {StateCreated, StateStopped, StateFailed},
		OpPause:  {StateRunning},
		OpResume: {StatePaused},
		OpStop:   {StateRunning, StatePaused, StateStopping},
		OpDelete: {StateCreated, StateStopped, StateFailed},
	}
	for op, ok := range want {
		for _, s := range states {
			allowed := false
			for _, o := range ok {
				allowed = allowed || o == s
			}
			if s.Allows(op) != allowed {
				t.Errorf("%s from %s: allowed %v, want %v", op, s, s.Allows(op), allowed)
			}
		}
	}
	err := error(stateError("a", OpPause, StateStopped))
	if !errors.Is(err, ErrState) || err.Error() != "VM a is stopped: cannot pause it" {
		t.Fatalf("got %v", err)
	}
	if got := stateError("a", OpDelete, StateRunning).Error(); got != "VM a is running: cannot delete it (stop it first, or delete it with force)" {
		t.Fatalf("got %q", got)
	}
}
