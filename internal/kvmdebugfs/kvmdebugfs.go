// Package kvmdebugfs reads the per-VM counters KVM keeps under
// /sys/kernel/debug/kvm, the one source of VM-exit counts that is the same
// for every VMM on a host (colibri, gokvm, QEMU). Benchmarks under scripts/
// use it to compare VMMs; the VMM itself reads its own counters through the
// binary stats fd (package kvm) instead.
package kvmdebugfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Dir is where debugfs shows KVM's per-VM directories when debugfs is
// mounted at its usual place.
const Dir = "/sys/kernel/debug/kvm"

// Counters maps a counter's name (a file in a VM's directory, e.g. "exits",
// "io_exits") to its value.
type Counters map[string]uint64

// Add adds o into c.
func (c Counters) Add(o Counters) {
	for k, v := range o {
		c[k] += v
	}
}

// Sub returns c - base for every counter in c (a counter that went
// backwards, as when a VM was destroyed between the two readings, gives 0).
func (c Counters) Sub(base Counters) Counters {
	out := Counters{}
	for k, v := range c {
		if b := base[k]; v > b {
			out[k] = v - b
		} else {
			out[k] = 0
		}
	}
	return out
}

// Available reports why the counters cannot be read here (nil if they can).
func Available() error {
	if _, err := os.Stat(Dir); err != nil {
		return fmt.Errorf("%s missing (mount debugfs: mount -t debugfs none /sys/kernel/debug): %w", Dir, err)
	}
	return nil
}

// Process sums the named counters over every VM that process pid owns. KVM
// names a VM's directory "<tid>-<fd>" after the thread that created the VM,
// so a directory belongs to pid when that tid is one of pid's threads. With
// names nil it reads every counter of the VM directory. It returns nil when
// pid owns no VM (yet, or any more).
func Process(pid int, names []string) Counters {
	all, _ := filepath.Glob(filepath.Join(Dir, "*-*"))
	var out Counters
	for _, d := range all {
		tid, _, _ := strings.Cut(filepath.Base(d), "-")
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%s", pid, tid)); err != nil {
			continue
		}
		if out == nil {
			out = Counters{}
		}
		list := names
		if list == nil {
			list = counterFiles(d)
		}
		for _, name := range list {
			b, err := os.ReadFile(filepath.Join(d, name))
			if err != nil {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
			if err == nil {
				out[name] += n
			}
		}
	}
	return out
}

// counterFiles lists the counters (regular files) of a VM directory.
func counterFiles(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names
}
