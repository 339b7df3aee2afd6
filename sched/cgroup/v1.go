package cgroup

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// v1Backend uses the cpuset and cpu v1 hierarchies, which take threads
// directly (their tasks files).
type v1Backend struct {
	cpuset, cpu string // the hierarchies' mount points
}

// roots lists the hierarchies, cpuset first: a task joins its cpuset
// before its cpu group, and groups are listed from the cpuset one.
func (b *v1Backend) roots() []string { return []string{b.cpuset, b.cpu} }

// mountinfo is the file listing this process's mounts.
const mountinfo = "/proc/self/mountinfo"

// unescapeMount undoes the octal escapes (\040 for a space, \011, \012,
// \134) that /proc/self/mountinfo writes in paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseV1Mounts returns the mount points of the cgroup v1 hierarchies
// that hold the cpuset and the cpu controllers, read from the content of
// a mountinfo file ("ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] -
// FSTYPE SOURCE SUPEROPTS"); the first mount of a hierarchy wins. A
// controller not mounted is "".
func parseV1Mounts(content string) (cpuset, cpu string) {
	for _, line := range strings.Split(content, "\n") {
		left, right, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		l, r := strings.Fields(left), strings.Fields(right)
		if len(l) < 5 || len(r) < 3 || r[0] != "cgroup" {
			continue
		}
		for _, opt := range strings.Split(r[2], ",") {
			switch {
			case opt == "cpuset" && cpuset == "":
				cpuset = unescapeMount(l[4])
			case opt == "cpu" && cpu == "":
				cpu = unescapeMount(l[4])
			}
		}
	}
	return cpuset, cpu
}

// newV1Backend finds the cpuset and cpu hierarchies in this process's
// mounts.
func newV1Backend() (*v1Backend, error) {
	s, err := readFile(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("cgroup: read the cgroup v1 mounts: %w", err)
	}
	cpuset, cpu := parseV1Mounts(s)
	if cpuset == "" || cpu == "" {
		return nil, errors.New("cgroup: this host has cgroup v1 without both the cpu and cpuset controllers mounted; colibri needs cgroup v2 (boot with systemd.unified_cgroup_hierarchy=1) or v1 cpu and cpuset hierarchies")
	}
	return &v1Backend{cpuset: cpuset, cpu: cpu}, nil
}

func v1Usable() error {
	_, err := newV1Backend()
	return err
}

// ensureCpuset creates the cpuset group dir and its missing ancestors.
// A new v1 cpuset group starts with empty cpuset.cpus and cpuset.mems,
// and no task can join it until both are set: each level gets its
// parent's values where its own are empty.
func (b *v1Backend) ensureCpuset(dir string) error {
	parent := b.cpuset
	for _, name := range strings.Split(strings.Trim(dir, "/"), "/") {
		p := filepath.Join(parent, name)
		if err := mkdirAll(p); err != nil {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if err := inherit(p, parent, f); err != nil {
				return err
			}
		}
		parent = p
	}
	return nil
}

// inherit copies control file name from group parent to group dir if
// dir's is empty.
func inherit(dir, parent, name string) error {
	own, err := readFile(filepath.Join(dir, name))
	if err != nil || strings.TrimSpace(own) != "" {
		return err
	}
	v, err := readFile(filepath.Join(parent, name))
	if err != nil || strings.TrimSpace(v) == "" {
		return err
	}
	return writeFile(filepath.Join(dir, name), v)
}

// v1CPUValues returns what l writes to a v1 cpu group, in the order
// written: cpu.shares (with a weight), cpu.cfs_period_us and
// cpu.cfs_quota_us (-1: no cap), the period first.
func v1CPUValues(l Limits) [][2]string {
	var vs [][2]string
	if l.Weight != 0 {
		vs = append(vs, [2]string{"cpu.shares", strconv.FormatUint(cpuShares(l.Weight), 10)})
	}
	quota := "-1"
	if l.Quota > 0 {
		quota = strconv.FormatInt(l.Quota.Microseconds(), 10)
	}
	return append(vs,
		[2]string{"cpu.cfs_period_us", strconv.FormatInt(l.period().Microseconds(), 10)},
		[2]string{"cpu.cfs_quota_us", quota})
}

// apply creates the group dir in both hierarchies if need be and sets
// l there.
func (b *v1Backend) apply(dir string, l Limits) error {
	if err := b.ensureCpuset(dir); err != nil {
		return err
	}
	if len(l.CPUs) > 0 {
		if err := writeFile(filepath.Join(b.cpuset, dir, "cpuset.cpus"), cpuList(l.CPUs)); err != nil {
			return err
		}
	}
	cpu := filepath.Join(b.cpu, dir)
	if err := mkdirAll(cpu); err != nil {
		return err
	}
	for _, v := range v1CPUValues(l) {
		if err := writeFile(filepath.Join(cpu, v[0]), v[1]); err != nil {
			return err
		}
	}
	return nil
}

func (b *v1Backend) setup(dir string) error {
	if err := b.ensureCpuset(dir); err != nil {
		return err
	}
	return mkdirAll(filepath.Join(b.cpu, dir))
}

func (b *v1Backend) newGroup(dir string, l Limits) (group, error) {
	if err := b.apply(dir, l); err != nil {
		_ = b.removeStale(dir)
		return nil, err
	}
	return &v1Group{b: b, dir: dir}, nil
}

func (b *v1Backend) teardown(dir string) error { return b.removeStale(dir) }

// removeStale moves the threads left in the tree at dir to the root
// group and removes the tree, deepest groups first, in each hierarchy.
func (b *v1Backend) removeStale(dir string) error {
	var errs []error
	for _, root := range b.roots() {
		rootTasks := filepath.Join(root, "tasks")
		errs = append(errs, removeTree(filepath.Join(root, dir), func(d string) {
			ids, _ := readIDs(filepath.Join(d, "tasks"))
			for _, id := range ids {
				_ = writeFile(rootTasks, strconv.Itoa(id)) // gone meanwhile: fine
			}
		}))
	}
	return errors.Join(errs...)
}

func (b *v1Backend) children(dir string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, root := range b.roots() {
		names, err := childGroups(filepath.Join(root, dir))
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out, nil
}

func (b *v1Backend) removeIfEmpty(dir string) {
	for _, root := range b.roots() {
		_ = unix.Rmdir(filepath.Join(root, dir)) // fails while in use: fine
	}
}

// v1Group is a VM group in both hierarchies; dir is relative to their
// mount points.
type v1Group struct {
	b   *v1Backend
	dir string
}

// addThread writes tid to the group's tasks in each hierarchy, the
// cpuset first. The kernel can refuse a thread with EINVAL for a moment
// (while it is being created or changes groups): that is retried for
// about 120ms.
func (g *v1Group) addThread(tid int) error {
	for _, root := range g.b.roots() {
		if err := writeRetry(filepath.Join(root, g.dir, "tasks"), strconv.Itoa(tid), unix.EINVAL, 5, 30*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func (g *v1Group) update(l Limits) error { return g.b.apply(g.dir, l) }

func (g *v1Group) threads() ([]int, error) {
	return readIDs(filepath.Join(g.b.cpuset, g.dir, "tasks"))
}

func (g *v1Group) delete() error { return g.b.removeStale(g.dir) }
