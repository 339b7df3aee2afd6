package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// v2Mount is where the unified hierarchy is mounted.
const v2Mount = "/sys/fs/cgroup"

// v2Controllers is what a VM group needs enabled in its ancestors'
// cgroup.subtree_control; both are threaded controllers.
const v2Controllers = "+cpu +cpuset"

// v2Backend uses the unified hierarchy with a threaded subtree: the
// per-process group is a threaded domain holding the whole process, VM
// groups are threaded children holding vCPU threads.
type v2Backend struct {
	domain  string // the per-process group's directory once set up
	origDir string // the process's group before setup
}

// ownV2Group returns the process's group in the unified hierarchy, from
// the "0::PATH" line of /proc/self/cgroup.
func ownV2Group() (string, error) {
	const file = "/proc/self/cgroup"
	s, err := readFile(file)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(s, "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			if !strings.HasPrefix(p, "/") || path.Clean(p) != p {
				return "", fmt.Errorf("%s: this process's group %q is outside the cgroup namespace's root", file, p)
			}
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: no cgroup v2 entry (0::PATH)", file)
}

// enableControllers writes "+cpu +cpuset" to the cgroup.subtree_control
// of every ancestor of the group at dir (a full path), from the mount's
// root down to dir's parent: a controller can be enabled for a subtree
// only where the parent enables it too. What counts is the parent's
// write; an ancestor's failure (a controller it already passes down, a
// root that is not ours to change) is reported only with the parent's.
func enableControllers(dir string) error {
	rel, err := filepath.Rel(v2Mount, filepath.Dir(dir))
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("%s is not below %s", dir, v2Mount)
	}
	ancestors := []string{v2Mount}
	if rel != "." {
		p := v2Mount
		for _, name := range strings.Split(rel, "/") {
			p = filepath.Join(p, name)
			ancestors = append(ancestors, p)
		}
	}
	var errs []error
	var last error
	for _, a := range ancestors {
		last = writeFile(filepath.Join(a, "cgroup.subtree_control"), v2Controllers)
		if last != nil {
			errs = append(errs, last)
		}
	}
	if last == nil {
		return nil
	}
	return errors.Join(errs...)
}

func (b *v2Backend) roots() []string { return []string{v2Mount} }

func (b *v2Backend) setup(dir string) error {
	orig, err := ownV2Group()
	if err != nil {
		return err
	}
	p := filepath.Join(v2Mount, dir)
	if err := mkdirAll(p); err != nil {
		return err
	}
	pid := strconv.Itoa(os.Getpid())
	if err := writeFile(filepath.Join(p, "cgroup.procs"), pid); err != nil {
		_ = removeTree(p, nil)
		return fmt.Errorf("move colibri into %s: %w", dir, err)
	}
	if err := enableControllers(p); err != nil {
		// Leave no process behind in a group nobody will remove.
		if writeFile(filepath.Join(v2Mount, orig, "cgroup.procs"), pid) == nil {
			_ = removeTree(p, nil)
		}
		return fmt.Errorf("enable the cpu and cpuset controllers: %w", err)
	}
	b.domain, b.origDir = p, orig
	return nil
}

func (b *v2Backend) newGroup(dir string, l Limits) (group, error) {
	p := filepath.Join(v2Mount, dir)
	if err := mkdirAll(p); err != nil {
		return nil, err
	}
	fail := func(err error) (group, error) {
		_ = removeTree(p, nil)
		return nil, err
	}
	// A threaded child turns its parent, the per-process group, into a
	// threaded domain, whose threads may then live in any of its
	// threaded children.
	if err := writeFile(filepath.Join(p, "cgroup.type"), "threaded"); err != nil {
		return fail(fmt.Errorf("make it threaded: %w", err))
	}
	// The VM group's own cpu.* and cpuset.* files exist only once its
	// parent (now a threaded domain) enables the controllers for its
	// subtree.
	if err := enableControllers(p); err != nil {
		return fail(fmt.Errorf("enable the cpu and cpuset controllers for %s: %w", dir, err))
	}
	g := &v2Group{b: b, dir: p}
	if err := g.update(l); err != nil {
		return fail(err)
	}
	return g, nil
}

func (b *v2Backend) teardown(string) error {
	if b.domain == "" {
		return nil
	}
	procs := filepath.Join(v2Mount, b.origDir, "cgroup.procs")
	if err := writeFile(procs, strconv.Itoa(os.Getpid())); err != nil {
		return fmt.Errorf("move colibri back to %s: %w", b.origDir, err)
	}
	return v2Remove(b.domain)
}

// v2Remove removes the tree at dir, deepest groups first, once no thread
// is left in it.
func v2Remove(dir string) error {
	var left []int
	var errs []error
	var walk func(d string)
	walk = func(d string) {
		ids, err := readIDs(filepath.Join(d, "cgroup.threads"))
		if err != nil {
			if !errors.Is(err, unix.ENOENT) {
				errs = append(errs, err)
			}
			return
		}
		left = append(left, ids...)
		subs, err := childGroups(d)
		if err != nil {
			errs = append(errs, err)
		}
		for _, s := range subs {
			walk(filepath.Join(d, s))
		}
	}
	walk(dir)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("%s still holds threads %v", dir, left)
	}
	return removeTree(dir, nil)
}

// removeStale removes a dead process's tree, deepest groups first; its
// threads are gone with the process.
func (b *v2Backend) removeStale(dir string) error {
	return removeTree(filepath.Join(v2Mount, dir), nil)
}

func (b *v2Backend) children(dir string) ([]string, error) {
	return childGroups(filepath.Join(v2Mount, dir))
}

func (b *v2Backend) removeIfEmpty(dir string) {
	_ = unix.Rmdir(filepath.Join(v2Mount, dir)) // fails while in use: fine
}

// v2Group is a threaded VM group; dir is its full path.
type v2Group struct {
	b   *v2Backend
	dir string
}

func (g *v2Group) addThread(tid int) error {
	return writeFile(filepath.Join(g.dir, "cgroup.threads"), strconv.Itoa(tid))
}

func (g *v2Group) update(l Limits) error {
	if l.Weight != 0 {
		if err := writeFile(filepath.Join(g.dir, "cpu.weight"), strconv.FormatUint(l.Weight, 10)); err != nil {
			return err
		}
	}
	if err := writeFile(filepath.Join(g.dir, "cpu.max"), cpuMax(l)); err != nil {
		return err
	}
	if len(l.CPUs) > 0 {
		if err := writeFile(filepath.Join(g.dir, "cpuset.cpus"), cpuList(l.CPUs)); err != nil {
			return err
		}
	}
	return nil
}

func (g *v2Group) threads() ([]int, error) {
	return readIDs(filepath.Join(g.dir, "cgroup.threads"))
}

// delete moves the group's threads back to the per-process group and
// removes the group. A thread that exits meanwhile (ESRCH) has left by
// itself.
func (g *v2Group) delete() error {
	tids, err := g.threads()
	if err != nil {
		return err
	}
	back := filepath.Join(g.b.domain, "cgroup.threads")
	for _, t := range tids {
		if err := writeFile(back, strconv.Itoa(t)); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("move thread %d back: %w", t, err)
		}
	}
	return v2Remove(g.dir)
}
