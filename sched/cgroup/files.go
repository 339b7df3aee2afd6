package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// This file holds the cgroupfs file operations both versions share. Their
// errors name the file and the value and wrap the kernel's errno (so
// errors.Is(err, unix.EBUSY) and errors.Is(err, fs.ErrNotExist) work);
// the callers add which group and operation failed.

// errno returns the error inside a *fs.PathError, whose text would repeat
// the path the message already names.
func errno(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// writeFile writes value to the control file p in one write(2), which is
// how cgroupfs takes a value. The file is neither created nor truncated.
func writeFile(p, value string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, p, errno(err))
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, p, errno(err))
	}
	return nil
}

// writeRetry is writeFile tried up to tries times, pausing pause between
// tries, while the write fails with errno retry.
func writeRetry(p, value string, retry unix.Errno, tries int, pause time.Duration) error {
	var err error
	for i := 0; i < tries; i++ {
		if i > 0 {
			time.Sleep(pause)
		}
		if err = writeFile(p, value); err == nil || !errors.Is(err, retry) {
			return err
		}
	}
	return err
}

// readFile returns the content of control file p without its trailing
// newlines.
func readFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", p, errno(err))
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// mkdirAll creates the group directory p and its missing parents.
func mkdirAll(p string) error {
	if err := os.MkdirAll(p, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", p, errno(err))
	}
	return nil
}

// parseIDs parses the content of a tasks, cgroup.procs or cgroup.threads
// file (one decimal id a line) read from file. It returns a non-nil slice.
func parseIDs(file, content string) ([]int, error) {
	ids := []int{}
	for _, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		id, err := strconv.ParseUint(line, 10, 31)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("%s: bad thread or process id %q", file, line)
		}
		ids = append(ids, int(id))
	}
	return ids, nil
}

// readIDs reads and parses the ids in file.
func readIDs(file string) ([]int, error) {
	s, err := readFile(file)
	if err != nil {
		return nil, err
	}
	return parseIDs(file, s)
}

// cpuList formats a cpuset as cpuset.cpus takes it ("0,2,3").
func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// cpuMax formats l's cap as cgroup v2's cpu.max takes it: "QUOTA PERIOD"
// in microseconds, or "max PERIOD" when there is no cap.
func cpuMax(l Limits) string {
	period := strconv.FormatInt(l.period().Microseconds(), 10)
	if l.Quota <= 0 {
		return "max " + period
	}
	return strconv.FormatInt(l.Quota.Microseconds(), 10) + " " + period
}

// cpuShares converts a cgroup v2 weight (default 100) into cgroup v1
// cpu.shares (default 1024), at least the kernel's minimum 2.
func cpuShares(weight uint64) uint64 {
	return max(weight*1024/100, 2)
}

// rmdir removes the empty group directory p. The kernel lets a group go
// only once its last task has fully exited, a moment after the task left
// cgroup.threads, so an EBUSY is retried for about 150ms (pauses of 10,
// 20, 40 and 80ms). A directory already gone is no error.
func rmdir(p string) error {
	pause := 10 * time.Millisecond
	for i := 0; ; i++ {
		err := unix.Rmdir(p)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY || i == 4 {
			return fmt.Errorf("removing %s: %w", p, err)
		}
		time.Sleep(pause)
		pause *= 2
	}
}

// removeTree removes the group at dir and every group below it, children
// first. before, if not nil, runs on each group just before its rmdir (to
// move the tasks left in it out). A tree already gone is no error.
func removeTree(dir string, before func(dir string)) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, errno(err))
	}
	var errs []error
	for _, e := range ents {
		if e.IsDir() {
			errs = append(errs, removeTree(filepath.Join(dir, e.Name()), before))
		}
	}
	if before != nil {
		before(dir)
	}
	errs = append(errs, rmdir(dir))
	return errors.Join(errs...)
}

// childGroups lists the names of dir's child groups; a dir that does not
// exist has none.
func childGroups(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, errno(err))
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
