package observer

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/sched"
)

// BenchmarkLoad measures one Observer.Load of a watched thread's state
// from the mmapped array: the observer's share of a scheduling pass.
func BenchmarkLoad(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("this benchmark loads eBPF programs and must run as root")
	}
	o, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	slot, err := o.Watch(unix.Gettid())
	if err != nil {
		b.Fatal(err)
	}
	var st sched.ThreadState
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o.Load(slot, &st)
	}
	b.StopTimer()
	if st.State == sched.Unknown {
		b.Fatal("no state loaded")
	}
}
