// Package cgroup contains colibri's VMs in control groups: one group per
// VM under a per-process group "<parent>/<pid>" (parent "colibri" by
// default), with the VM's managed cores as its cpuset and batch VMs
// weighted (cpu.weight) or capped (cpu.max). Groups are removed by
// [Manager.Close]; groups left by a crashed run (their pid is dead) are
// found and removed by [Open] and [CleanStale].
//
// cgroup v2 is the target: the per-process group becomes a threaded domain
// holding the colibri process, and VM groups are threaded children that
// take individual vCPU threads. On cgroup v1 (legacy or hybrid hosts, with
// the cpu and cpuset controllers on v1 hierarchies) the same layout is made
// in the cpu and cpuset hierarchies, which take threads directly. Hosts
// with neither are refused with a message saying what to do.
//
// The package reads and writes the cgroupfs control files itself (no
// cgroup library: linking one cost every colibri process its package
// initialisation and binary pages, cgroups or not). The unified hierarchy
// is recognised, as containerd does, by the cgroup2 magic number of the
// file system at /sys/fs/cgroup; the v1 hierarchies are found in
// /proc/self/mountinfo.
package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Version is the cgroup version in use.
type Version int

const (
	// V1 is the legacy hierarchy (cpu and cpuset controllers).
	V1 Version = 1
	// V2 is the unified hierarchy.
	V2 Version = 2
)

// Limits constrain one VM's threads.
type Limits struct {
	// CPUs is the VM's cpuset; empty inherits the parent's.
	CPUs []int
	// Weight is the relative CPU weight, 1–10000 (cgroup v2 cpu.weight;
	// default 100). On v1 it becomes cpu.shares = Weight*1024/100.
	Weight uint64
	// Quota per Period caps the VM's CPU time (cpu.max); Quota 0 means
	// no cap. Period defaults to 100ms.
	Quota, Period time.Duration
}

func (l Limits) validate() error {
	if l.Weight != 0 && (l.Weight < 1 || l.Weight > 10000) {
		return fmt.Errorf("cpu weight %d not in 1..10000", l.Weight)
	}
	if l.Quota < 0 || l.Period < 0 {
		return errors.New("negative cpu quota or period")
	}
	if l.Quota > 0 && l.Quota < time.Millisecond {
		return fmt.Errorf("cpu quota %v below the kernel's 1ms minimum", l.Quota)
	}
	for _, c := range l.CPUs {
		if c < 0 {
			return fmt.Errorf("negative CPU %d", c)
		}
	}
	return nil
}

func (l Limits) period() time.Duration {
	if l.Period == 0 {
		return 100 * time.Millisecond
	}
	return l.Period
}

// backend is one cgroup version's implementation.
type backend interface {
	// roots lists the mount points of the hierarchies it uses.
	roots() []string
	// setup creates the per-process group at dir.
	setup(dir string) error
	// newGroup creates the VM group at dir (a child of the setup one).
	newGroup(dir string, l Limits) (group, error)
	// teardown removes the per-process group (after its VM groups).
	teardown(dir string) error
	// removeStale removes the tree at dir, moving out any threads left.
	removeStale(dir string) error
	// children lists the names of dir's child groups.
	children(dir string) ([]string, error)
	// removeIfEmpty removes dir if it has no child groups or threads.
	removeIfEmpty(dir string)
}

// group is one VM group in a backend.
type group interface {
	addThread(tid int) error
	update(l Limits) error
	threads() ([]int, error)
	delete() error
}

// Manager owns this process's groups. Its methods are safe for
// concurrent use.
type Manager struct {
	version Version
	be      backend
	dir     string // "/<parent>/<pid>"

	mu     sync.Mutex
	groups map[string]*Group
	closed bool
}

// DetectVersion reports which cgroup version colibri would use here, or
// why it cannot use either.
func DetectVersion() (Version, error) {
	unified, err := isUnified(v2Mount)
	if err != nil {
		return 0, err
	}
	if unified {
		return V2, nil
	}
	// Legacy (v1 hierarchies only) or hybrid (v1 hierarchies, and cgroup2
	// at /sys/fs/cgroup/unified holding no controller colibri uses).
	if err := v1Usable(); err != nil {
		return 0, err
	}
	return V1, nil
}

// isUnified reports whether the file system at mount is cgroup2 (the
// unified hierarchy), by its magic number.
func isUnified(mount string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(mount, &st); err != nil {
		return false, fmt.Errorf("cgroup: no cgroup file system mounted at %s (statfs: %w); mount cgroup2 there (or boot with systemd's defaults)", mount, err)
	}
	return st.Type == unix.CGROUP2_SUPER_MAGIC, nil
}

// validName reports whether s can name a group: 1 to 64 letters, digits,
// '_', '.' and '-', starting with a letter or digit.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// Open detects the cgroup version, removes stale groups under parent
// left by dead processes, and creates this process's group
// "<parent>/<pid>". It needs root.
func Open(parent string) (*Manager, error) {
	if parent == "" {
		parent = "colibri"
	}
	if !validName(parent) {
		return nil, fmt.Errorf("cgroup: bad parent group name %q", parent)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("cgroup: creating control groups needs root")
	}
	v, err := DetectVersion()
	if err != nil {
		return nil, err
	}
	m := &Manager{version: v, dir: path.Join("/", parent, fmt.Sprint(os.Getpid())), groups: map[string]*Group{}}
	if v == V2 {
		m.be = &v2Backend{}
	} else {
		if m.be, err = newV1Backend(); err != nil {
			return nil, err
		}
	}
	if _, err := cleanStale(m.be, "/"+parent); err != nil {
		return nil, err
	}
	if err := m.be.setup(m.dir); err != nil {
		return nil, fmt.Errorf("cgroup: create %s (cgroup v%d): %w", m.dir, v, err)
	}
	return m, nil
}

// Version returns the cgroup version in use.
func (m *Manager) Version() Version { return m.version }

// Dir returns this process's group, relative to the cgroup mount(s).
func (m *Manager) Dir() string { return m.dir }

// Paths returns the directories of this process's group in every
// hierarchy the manager uses: one under the unified mount (v2), one in
// each of the cpuset and cpu hierarchies wherever they are mounted (v1;
// one if they are mounted together).
func (m *Manager) Paths() []string {
	var paths []string
	for _, r := range m.be.roots() {
		p := path.Join(r, m.dir)
		if !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	return paths
}

// NewGroup creates the group of VM vm with limits l.
func (m *Manager) NewGroup(vm string, l Limits) (*Group, error) {
	if !validName(vm) {
		return nil, fmt.Errorf("cgroup: bad VM group name %q", vm)
	}
	if err := l.validate(); err != nil {
		return nil, fmt.Errorf("cgroup: VM %s: %w", vm, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("cgroup: manager closed")
	}
	if _, ok := m.groups[vm]; ok {
		return nil, fmt.Errorf("cgroup: VM group %s exists", vm)
	}
	dir := path.Join(m.dir, vm)
	be, err := m.be.newGroup(dir, l)
	if err != nil {
		return nil, fmt.Errorf("cgroup: create %s: %w", dir, err)
	}
	g := &Group{m: m, name: vm, dir: dir, be: be}
	m.groups[vm] = g
	return g, nil
}

// Close deletes every VM group and this process's group.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	gs := make([]*Group, 0, len(m.groups))
	for _, g := range m.groups {
		gs = append(gs, g)
	}
	m.mu.Unlock()
	var errs []error
	for _, g := range gs {
		errs = append(errs, g.Delete())
	}
	if err := m.be.teardown(m.dir); err != nil {
		errs = append(errs, fmt.Errorf("cgroup: remove %s: %w", m.dir, err))
	}
	m.be.removeIfEmpty(path.Dir(m.dir))
	return errors.Join(errs...)
}

// Group is one VM's control group.
type Group struct {
	m    *Manager
	name string
	dir  string
	be   group
}

// Dir returns the group's path relative to the cgroup mount(s).
func (g *Group) Dir() string { return g.dir }

// AddThread moves thread tid (of this process) into the group.
func (g *Group) AddThread(tid int) error {
	if err := g.be.addThread(tid); err != nil {
		return fmt.Errorf("cgroup: add thread %d to %s: %w", tid, g.dir, err)
	}
	return nil
}

// Update changes the group's limits.
func (g *Group) Update(l Limits) error {
	if err := l.validate(); err != nil {
		return fmt.Errorf("cgroup: %s: %w", g.dir, err)
	}
	if err := g.be.update(l); err != nil {
		return fmt.Errorf("cgroup: update %s: %w", g.dir, err)
	}
	return nil
}

// Threads lists the thread ids in the group.
func (g *Group) Threads() ([]int, error) {
	t, err := g.be.threads()
	if err != nil {
		return nil, fmt.Errorf("cgroup: list threads of %s: %w", g.dir, err)
	}
	return t, nil
}

// Delete moves the group's threads back to this process's group (v2) or
// the root group (v1) and removes the group.
func (g *Group) Delete() error {
	g.m.mu.Lock()
	if g.m.groups[g.name] != g {
		g.m.mu.Unlock()
		return nil
	}
	delete(g.m.groups, g.name)
	g.m.mu.Unlock()
	if err := g.be.delete(); err != nil {
		return fmt.Errorf("cgroup: remove %s: %w", g.dir, err)
	}
	return nil
}
