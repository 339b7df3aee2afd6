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

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// v1Backend uses the cpuset and cpu v1 hierarchies.
type v1Backend struct {
	subs []cgroup1.Subsystem
}

type pather interface{ Path(string) string }

func v1Subsystems() ([]cgroup1.Subsystem, error) {
	all, err := cgroup1.Default()
	if err != nil {
		return nil, fmt.Errorf("cgroup: read the cgroup v1 mounts: %w", err)
	}
	var subs []cgroup1.Subsystem
	for _, s := range all {
		if s.Name() == cgroup1.Cpuset || s.Name() == cgroup1.Cpu {
			if _, ok := s.(pather); ok {
				subs = append(subs, s)
			}
		}
	}
	if len(subs) != 2 {
		return nil, errors.New("cgroup: this host has cgroup v1 without both the cpu and cpuset controllers mounted; colibri needs cgroup v2 (boot with systemd.unified_cgroup_hierarchy=1) or v1 cpu and cpuset hierarchies")
	}
	return subs, nil
}

func v1Usable() error {
	_, err := v1Subsystems()
	return err
}

func newV1Backend() (*v1Backend, error) {
	subs, err := v1Subsystems()
	if err != nil {
		return nil, err
	}
	return &v1Backend{subs: subs}, nil
}

func (b *v1Backend) hierarchy() cgroup1.InitOpts {
	return cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return b.subs, nil })
}

func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

func v1Resources(l Limits) *specs.LinuxResources {
	cpu := &specs.LinuxCPU{Cpus: cpuList(l.CPUs)}
	if l.Weight != 0 {
		shares := l.Weight * 1024 / 100
		if shares < 2 {
			shares = 2
		}
		cpu.Shares = &shares
	}
	quota := int64(-1)
	if l.Quota > 0 {
		quota = l.Quota.Microseconds()
	}
	period := uint64(l.period().Microseconds())
	cpu.Quota, cpu.Period = &quota, &period
	return &specs.LinuxResources{CPU: cpu}
}

func (b *v1Backend) setup(dir string) error {
	_, err := cgroup1.New(cgroup1.StaticPath(dir), &specs.LinuxResources{}, b.hierarchy())
	return err
}

func (b *v1Backend) newGroup(dir string, l Limits) (group, error) {
	cg, err := cgroup1.New(cgroup1.StaticPath(dir), v1Resources(l), b.hierarchy())
	if err != nil {
		return nil, err
	}
	return &v1Group{b: b, cg: cg, dir: dir}, nil
}

func (b *v1Backend) teardown(dir string) error { return b.removeStale(dir) }

// removeStale moves the threads left in the tree at dir to the root
// group and removes the tree, deepest groups first, in each hierarchy.
func (b *v1Backend) removeStale(dir string) error {
	var errs []error
	for _, s := range b.subs {
		root := s.(pather).Path("/")
		top := s.(pather).Path(dir)
		var dirs []string
		err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			for _, tid := range readIDs(filepath.Join(d, "tasks")) {
				_ = os.WriteFile(filepath.Join(root, "tasks"), []byte(strconv.Itoa(tid)), 0)
			}
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (b *v1Backend) children(dir string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, s := range b.subs {
		ents, err := os.ReadDir(s.(pather).Path(dir))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if e.IsDir() && !seen[e.Name()] {
				seen[e.Name()] = true
				out = append(out, e.Name())
			}
		}
	}
	return out, nil
}

// readIDs reads a tasks or cgroup.threads file; missing means none.
func readIDs(file string) []int {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var ids []int
	for _, f := range strings.Fields(string(b)) {
		if id, err := strconv.Atoi(f); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

type v1Group struct {
	b   *v1Backend
	cg  cgroup1.Cgroup
	dir string
}

func (g *v1Group) addThread(tid int) error {
	return g.cg.AddTask(cgroup1.Process{Pid: tid})
}

func (g *v1Group) update(l Limits) error { return g.cg.Update(v1Resources(l)) }

func (g *v1Group) threads() ([]int, error) {
	ts, err := g.cg.Tasks(cgroup1.Cpuset, false)
	if err != nil {
		return nil, err
	}
	ids := make([]int, len(ts))
	for i, t := range ts {
		ids[i] = t.Pid
	}
	return ids, nil
}

func (g *v1Group) delete() error { return g.b.removeStale(g.dir) }

func (b *v1Backend) removeIfEmpty(dir string) {
	for _, s := range b.subs {
		_ = os.Remove(s.(pather).Path(dir)) // fails while in use: fine
	}
}
