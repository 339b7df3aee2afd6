package main

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/kvmdebugfs"
)

// offDatapath returns read run on an OS thread of its own kept on cpus
// (none: anywhere), and a stop that ends that thread. netbench reads the
// counters at each console mark, while the guests are already in the
// phase the mark opens; a read that lands on the datapath's core takes it
// from colibri's pinned poller for the read's milliseconds (in the
// sandbox, the first ~30 pings after the mark were 5-15 ms), where
// QEMU's vhost threads would simply run elsewhere.
func offDatapath(cpus []int, read func() kvmdebugfs.Counters) (func() kvmdebugfs.Counters, func()) {
	if len(cpus) == 0 {
		return read, func() {}
	}
	reqs := make(chan chan kvmdebugfs.Counters)
	go func() {
		runtime.LockOSThread() // the thread ends with the goroutine
		var set unix.CPUSet
		for _, c := range cpus {
			set.Set(c)
		}
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			fmt.Fprintf(os.Stderr, "netbench: keeping the counter reads off the datapath's core: %v\n", err)
		}
		for r := range reqs {
			r <- read()
		}
	}()
	call := func() kvmdebugfs.Counters {
		r := make(chan kvmdebugfs.Counters)
		reqs <- r
		return <-r
	}
	return call, func() { close(reqs) }
}
