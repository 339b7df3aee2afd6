package cgroup

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"

	"golang.org/x/sys/unix"
)

var pidName = regexp.MustCompile(`^[0-9]+$`)

// CleanStale removes the groups "<parent>/<pid>" whose process is dead
// (left by a crashed run) and returns their paths.
func CleanStale(parent string) ([]string, error) {
	if !validName.MatchString(parent) {
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
		if !pidName.MatchString(n) {
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

// alive reports whether process pid exists.
func alive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || err == unix.EPERM
}
