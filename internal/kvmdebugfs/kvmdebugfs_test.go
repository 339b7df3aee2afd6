package kvmdebugfs

import (
	"os"
	"testing"
)

func TestCountersArithmetic(t *testing.T) {
	c := Counters{"exits": 10}
	c.Add(Counters{"exits": 5, "io_exits": 2})
	if c["exits"] != 15 || c["io_exits"] != 2 {
		t.Fatalf("Add: got %v", c)
	}
	d := c.Sub(Counters{"exits": 20, "io_exits": 1})
	if d["exits"] != 0 || d["io_exits"] != 1 {
		t.Fatalf("Sub: got %v, want exits 0 (went backwards), io_exits 1", d)
	}
}

// TestProcessWithoutVM: a process with no VM has no counters, whether or
// not debugfs is mounted.
func TestProcessWithoutVM(t *testing.T) {
	if got := Process(os.Getpid(), []string{"exits"}); got != nil {
		t.Fatalf("Process(self) = %v, want nil (this test creates no VM)", got)
	}
}
