// Package privdrop switches a running colibri, every thread of it, from
// root to an unprivileged user once everything that needs root is done:
// the KVM device, TAPs, AF_XDP sockets and eBPF programs, cgroups,
// images, disks and console files are open by then and stay usable
// through their descriptors.
//
// Credentials are per thread in Linux. Go (since 1.16) applies
// syscall.Setresuid, Setresgid and Setgroups to every thread: without
// cgo, as colibri's binary is built (CGO_ENABLED=0), the runtime signals
// each thread to make the call (syscall.AllThreadsSyscall); with cgo (a
// build or test binary that links runtime/cgo) it calls glibc, whose
// setxid broadcast does the same with its own signal (SIGSETXID) to every
// pthread, which all of Go's threads are in a cgo binary. So every
// thread's seccomp filter must let these calls through: internal/seccomp
// allows exactly these ids (Options.DropTo).
//
// Capabilities: switching every uid away from 0 with keepcaps unset
// empties the permitted, effective and ambient sets of each thread as it
// switches. colibri keeps none: nothing it does after setup needs one
// (see Drop). Keeping some would need prctl(PR_SET_KEEPCAPS) and capset
// on every thread, which Go can broadcast only without cgo
// (AllThreadsSyscall returns ENOTSUP in a cgo binary). The bounding set
// is left as it is: with no_new_privs set (by the seccomp filters) and
// execve refused, nothing can regain a capability through it.
//
// The kernel also marks the process non-dumpable when its credentials
// change: no core dumps, and other processes of the same user cannot
// ptrace it or read its private /proc files.
package privdrop

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// IDs are the user and group a process drops to.
type IDs struct {
	UID, GID int
}

// ParseIDs parses "UID" or "UID:GID" (numbers; a lone UID takes the
// same number as its GID).
func ParseIDs(s string) (IDs, error) {
	us, gs, hasGID := strings.Cut(s, ":")
	uid, err := parseID(us)
	if err != nil {
		return IDs{}, fmt.Errorf("user %q: %w", s, err)
	}
	gid := uid
	if hasGID {
		if gid, err = parseID(gs); err != nil {
			return IDs{}, fmt.Errorf("user %q: group: %w", s, err)
		}
	}
	return IDs{UID: uid, GID: gid}, nil
}

func parseID(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a numeric id", s)
	}
	if n == 1<<32-1 {
		return 0, errors.New("4294967295 is not a valid id")
	}
	return int(n), nil
}

func (ids IDs) String() string { return fmt.Sprintf("%d:%d", ids.UID, ids.GID) }

// Drop switches every thread of the process to ids: no supplementary
// groups, then the gid, then the uid (real, effective and saved), and
// checks in /proc that every thread has them and no capability left.
//
// What colibri does after the drop, and why none of it needs a
// capability: vCPU threads use their KVM fds; pollers read and write
// eventfds, TAP fds and AF_XDP sockets opened before; the scheduler
// moves threads of its own process (sched_setaffinity on threads with
// the caller's uid needs no CAP_SYS_NICE) and its SCHED_FIFO priority,
// if any, was set as its thread started, before the drop; it moves vCPU
// threads into cgroups the caller chowned to ids beforehand; the eBPF
// observer's programs are loaded and its arrays mapped, and map updates
// on its fds need no capability (only creating maps and loading programs
// does, while kernel.unprivileged_bpf_disabled is set); a TAP colibri
// made vanishes when its fd closes; an XDP program attached through a
// bpf link leaves with the link's fd. Re-opening a file after the drop
// (a VM restarted after a reboot re-reads its kernel and disks and
// reopens the KVM device) works only where ids may open it.
func Drop(ids IDs) error {
	if ids.UID < 0 || ids.GID < 0 {
		return fmt.Errorf("privdrop: negative id in %v", ids)
	}
	if err := syscall.Setgroups([]int{}); err != nil {
		return fmt.Errorf("privdrop: setgroups([]): %w", err)
	}
	if err := syscall.Setresgid(ids.GID, ids.GID, ids.GID); err != nil {
		return fmt.Errorf("privdrop: setresgid(%d): %w", ids.GID, err)
	}
	if err := syscall.Setresuid(ids.UID, ids.UID, ids.UID); err != nil {
		return fmt.Errorf("privdrop: setresuid(%d): %w", ids.UID, err)
	}
	return Check(os.Getpid(), ids)
}

// Creds are one thread's credentials as /proc shows them.
type Creds struct {
	TID int
	// UIDs and GIDs are real, effective, saved and filesystem ids.
	UIDs, GIDs [4]int
	Groups     []int
	// CapInh, CapPrm, CapEff, CapBnd, CapAmb are the capability sets.
	CapInh, CapPrm, CapEff, CapBnd, CapAmb uint64
	// NoNewPrivs and Seccomp (0 none, 1 strict, 2 filter) as the kernel
	// reports them.
	NoNewPrivs, Seccomp int
	// SeccompFilters is the number of filters on the thread (-1 where
	// the kernel does not say).
	SeccompFilters int
}

// Threads reads the credentials of every thread of process pid.
func Threads(pid int) ([]Creds, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("privdrop: list threads: %w", err)
	}
	var out []Creds
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "status"))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("privdrop: thread %s: %w", e.Name(), err)
		}
		c, err := parseStatus(b)
		if err != nil {
			return nil, fmt.Errorf("privdrop: thread %s: %w", e.Name(), err)
		}
		c.TID, _ = strconv.Atoi(e.Name())
		out = append(out, c)
	}
	return out, nil
}

// parseStatus reads the credential lines of a /proc status file.
func parseStatus(b []byte) (Creds, error) {
	c := Creds{SeccompFilters: -1}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		var err error
		switch key {
		case "Uid", "Gid":
			ids := &c.UIDs
			if key == "Gid" {
				ids = &c.GIDs
			}
			if len(f) != 4 {
				return c, fmt.Errorf("%s line %q", key, val)
			}
			for i := range f {
				if ids[i], err = strconv.Atoi(f[i]); err != nil {
					return c, fmt.Errorf("%s line %q", key, val)
				}
			}
			seen++
		case "Groups":
			for _, g := range f {
				n, err := strconv.Atoi(g)
				if err != nil {
					return c, fmt.Errorf("groups line %q", val)
				}
				c.Groups = append(c.Groups, n)
			}
		case "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb":
			if len(f) != 1 {
				return c, fmt.Errorf("%s line %q", key, val)
			}
			v, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil {
				return c, fmt.Errorf("%s line %q", key, val)
			}
			*map[string]*uint64{"CapInh": &c.CapInh, "CapPrm": &c.CapPrm, "CapEff": &c.CapEff, "CapBnd": &c.CapBnd, "CapAmb": &c.CapAmb}[key] = v
			seen++
		case "NoNewPrivs", "Seccomp", "Seccomp_filters":
			if len(f) != 1 {
				return c, fmt.Errorf("%s line %q", key, val)
			}
			n, err := strconv.Atoi(f[0])
			if err != nil {
				return c, fmt.Errorf("%s line %q", key, val)
			}
			*map[string]*int{"NoNewPrivs": &c.NoNewPrivs, "Seccomp": &c.Seccomp, "Seccomp_filters": &c.SeccompFilters}[key] = n
		}
	}
	if seen < 6 {
		return c, errors.New("status lacks Uid, Gid or capability lines")
	}
	return c, nil
}

// Check verifies that every thread of process pid runs as ids with no
// supplementary group and no permitted, effective or ambient
// capability.
func Check(pid int, ids IDs) error {
	ts, err := Threads(pid)
	if err != nil {
		return err
	}
	for _, t := range ts {
		for i := range 4 {
			if t.UIDs[i] != ids.UID || t.GIDs[i] != ids.GID {
				return fmt.Errorf("privdrop: thread %d runs as uids %v gids %v, not %v", t.TID, t.UIDs, t.GIDs, ids)
			}
		}
		if len(t.Groups) != 0 {
			return fmt.Errorf("privdrop: thread %d keeps groups %v", t.TID, t.Groups)
		}
		if t.CapPrm|t.CapEff|t.CapAmb != 0 {
			return fmt.Errorf("privdrop: thread %d keeps capabilities (permitted %#x, effective %#x, ambient %#x)", t.TID, t.CapPrm, t.CapEff, t.CapAmb)
		}
	}
	return nil
}

// Chown hands the trees at paths to ids: every directory and file in
// them (symbolic links themselves, not their targets). Missing paths are
// skipped.
func Chown(ids IDs, paths ...string) error {
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, ids.UID, ids.GID)
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("privdrop: chown %s to %v: %w", root, ids, err)
		}
	}
	return nil
}
