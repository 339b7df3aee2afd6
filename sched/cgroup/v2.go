package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
)

const v2Mount = "/sys/fs/cgroup"

// v2Backend uses the unified hierarchy with a threaded subtree: the
// per-process group is a threaded domain holding the whole process, VM
// groups are threaded children holding vCPU threads.
type v2Backend struct {
	domain  *cgroup2.Manager
	origDir string // the process's group before setup
}

func v2Resources(l Limits) *cgroup2.Resources {
	cpu := &cgroup2.CPU{Cpus: cpuList(l.CPUs)}
	if l.Weight != 0 {
		w := l.Weight
		cpu.Weight = &w
	}
	period := uint64(l.period().Microseconds())
	if l.Quota > 0 {
		q := l.Quota.Microseconds()
		cpu.Max = cgroup2.NewCPUMax(&q, &period)
	} else {
		cpu.Max = cgroup2.NewCPUMax(nil, &period)
	}
	return &cgroup2.Resources{CPU: cpu}
}

func ownV2Group() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

func (b *v2Backend) setup(dir string) error {
	orig, err := ownV2Group()
	if err != nil {
		return err
	}
	m, err := cgroup2.NewManager(v2Mount, dir, &cgroup2.Resources{})
	if err != nil {
		return err
	}
	if err := m.AddProc(uint64(os.Getpid())); err != nil {
		_ = m.Delete()
		return fmt.Errorf("move colibri into %s: %w", dir, err)
	}
	if err := m.ToggleControllers([]string{"cpu", "cpuset"}, cgroup2.Enable); err != nil {
		return fmt.Errorf("enable the cpu and cpuset controllers: %w", err)
	}
	b.domain, b.origDir = m, orig
	return nil
}

func (b *v2Backend) newGroup(dir string, l Limits) (group, error) {
	m, err := cgroup2.NewManager(v2Mount, dir, &cgroup2.Resources{})
	if err != nil {
		return nil, err
	}
	if err := m.SetType(cgroup2.Threaded); err != nil {
		_ = m.Delete()
		return nil, fmt.Errorf("make it threaded: %w", err)
	}
	// The VM group's own cpu.* and cpuset.* files exist only once its
	// parent (now a threaded domain) enables the controllers for its
	// subtree; ToggleControllers writes every ancestor's subtree_control.
	if err := m.ToggleControllers([]string{"cpu", "cpuset"}, cgroup2.Enable); err != nil {
		_ = m.Delete()
		return nil, fmt.Errorf("enable the cpu and cpuset controllers for %s: %w", dir, err)
	}
	if err := m.Update(v2Resources(l)); err != nil {
		_ = m.Delete()
		return nil, err
	}
	return &v2Group{b: b, m: m}, nil
}

func (b *v2Backend) teardown(dir string) error {
	if b.domain == nil {
		return nil
	}
	orig, err := cgroup2.Load(b.origDir)
	if err != nil {
		return err
	}
	if err := orig.AddProc(uint64(os.Getpid())); err != nil {
		return fmt.Errorf("move colibri back to %s: %w", b.origDir, err)
	}
	return b.domain.Delete()
}

// removeStale removes a dead process's tree, deepest groups first; its
// threads are gone with the process.
func (b *v2Backend) removeStale(dir string) error {
	var dirs []string
	err := filepath.WalkDir(filepath.Join(v2Mount, dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
	var errs []error
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (b *v2Backend) children(dir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(v2Mount, dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

type v2Group struct {
	b *v2Backend
	m *cgroup2.Manager
}

func (g *v2Group) addThread(tid int) error { return g.m.AddThread(uint64(tid)) }

func (g *v2Group) update(l Limits) error { return g.m.Update(v2Resources(l)) }

func (g *v2Group) threads() ([]int, error) {
	ts, err := g.m.Threads(false)
	if err != nil {
		return nil, err
	}
	ids := make([]int, len(ts))
	for i, t := range ts {
		ids[i] = int(t)
	}
	return ids, nil
}

func (g *v2Group) delete() error {
	ts, err := g.m.Threads(false)
	if err != nil {
		return err
	}
	for _, t := range ts {
		if err := g.b.domain.AddThread(t); err != nil {
			return fmt.Errorf("move thread %s back: %w", strconv.FormatUint(t, 10), err)
		}
	}
	return g.m.Delete()
}

func (b *v2Backend) removeIfEmpty(dir string) {
	_ = os.Remove(filepath.Join(v2Mount, dir)) // fails while in use: fine
}
