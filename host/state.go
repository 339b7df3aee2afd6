package host

import (
	"errors"
	"fmt"
	"slices"
)

// State is where a VM is in its life:
//
//	created → running ⇄ paused
//	running, paused → stopping → stopped | failed
//	running, paused → stopped | failed (the guest powered off, rebooted, crashed)
//	stopped, failed → running (started again)
//	created, stopped, failed → deleted (gone from the host)
type State string

// VM states.
const (
	// StateCreated: the VM exists (memory, devices, kernel loaded) and has
	// never run.
	StateCreated State = "created"
	// StateRunning: its vCPUs run.
	StateRunning State = "running"
	// StatePaused: its vCPUs are held out of guest mode, its devices
	// quiesced and its NICs cut off from the datapath.
	StatePaused State = "paused"
	// StateStopping: a stop was asked for and the guest is shutting down.
	StateStopping State = "stopping"
	// StateStopped: it ended as asked (the guest powered off or rebooted,
	// or the host stopped it).
	StateStopped State = "stopped"
	// StateFailed: it ended in a failure (a crash, a VMM error).
	StateFailed State = "failed"
)

// Op is a lifecycle operation on a VM.
type Op string

// Lifecycle operations.
const (
	OpStart  Op = "start"
	OpPause  Op = "pause"
	OpResume Op = "resume"
	OpStop   Op = "stop"
	OpDelete Op = "delete"
)

// allowed lists the states each operation may start from (Delete of a
// running, paused or stopping VM needs force).
var allowed = map[Op][]State{
	OpStart:  {StateCreated, StateStopped, StateFailed},
	OpPause:  {StateRunning},
	OpResume: {StatePaused},
	OpStop:   {StateRunning, StatePaused, StateStopping},
	OpDelete: {StateCreated, StateStopped, StateFailed},
}

// Allows reports whether op may be applied to a VM in state s.
func (s State) Allows(op Op) bool { return slices.Contains(allowed[op], s) }

// Ended reports whether a VM in state s has run and is no longer running.
func (s State) Ended() bool { return s == StateStopped || s == StateFailed }

// Errors the host returns, to be matched with errors.Is.
var (
	// ErrNotFound: no VM of that name.
	ErrNotFound = errors.New("no such VM")
	// ErrExists: a VM of that name exists.
	ErrExists = errors.New("a VM of that name exists")
	// ErrState: the VM's state forbids the operation (a *StateError).
	ErrState = errors.New("not allowed in the VM's state")
	// ErrClosed: the host is shutting down.
	ErrClosed = errors.New("the host is shutting down")
	// ErrUnsupported: the host cannot do it (e.g. a policy that needs the
	// eBPF observer on a host without it).
	ErrUnsupported = errors.New("not supported on this host")
)

// StateError is an operation refused because of the VM's state.
type StateError struct {
	VM    string
	Op    Op
	State State
	// Hint says what would work instead, if anything.
	Hint string
}

func (e *StateError) Error() string {
	msg := fmt.Sprintf("VM %s is %s: cannot %s it", e.VM, e.State, e.Op)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrState) true.
func (e *StateError) Is(target error) bool { return target == ErrState }

func stateError(vm string, op Op, s State) *StateError {
	e := &StateError{VM: vm, Op: op, State: s}
	switch {
	case op == OpDelete && !s.Allows(OpDelete):
		e.Hint = "stop it first, or delete it with force"
	case op == OpStart && (s == StateRunning || s == StatePaused):
		e.Hint = "it is already started"
	case op == OpPause && s == StatePaused:
		e.Hint = "it is already paused"
	case op == OpResume && s == StateRunning:
		e.Hint = "it is not paused"
	}
	return e
}
