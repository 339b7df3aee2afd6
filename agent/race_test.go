//go:build race

package agent_test

// raceEnabled says the race detector slows this binary down.
const raceEnabled = true
