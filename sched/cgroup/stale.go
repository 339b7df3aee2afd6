package cgroup

import (
	"errors"
	"fmt"
	"path"
	"strconv"

	"golang.org/x/sys/unix"
)

// CleanStale removes the groups "<parent>/<pid>" whose process is dead
// (left by a crashed run) and returns their paths.
func CleanStale(parent string) ([]string, error) {
	if !validName(parent) {
		return nil, fmt.Errorf("cgroup: bad parent group name %q", parent)
	}
	v, err := DetectVersion()
	if err != nil {
		return nil, err
	}
	var be backend = &v2Backend{}
	if v == V1 {
		if be, err = newV1Backend(); err != nil {
			return nil, err
		}
	}
	return cleanStale(be, "/"+parent)
}

func cleanStale(be backend, parent string) ([]string, error) {
	names, err := be.children(parent)
	if err != nil {
		return nil, fmt.Errorf("cgroup: list %s: %w", parent, err)
	}
	var removed []string
	var errs []error
	for _, n := range names {
		if !allDigits(n) {
			continue
		}
		pid, _ := strconv.Atoi(n)
		if alive(pid) {
			continue
		}
		dir := path.Join(parent, n)
		if err := be.removeStale(dir); err != nil {
			errs = append(errs, fmt.Errorf("cgroup: remove stale group %s: %w", dir, err))
			continue
		}
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

// allDigits reports whether s is a non-empty string of decimal digits,
// the name of a per-process group.
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// alive reports whether process pid exists.
func alive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || err == unix.EPERM
}
