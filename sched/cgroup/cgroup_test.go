package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/sched/threadvcpu"
)

const testParent = "colibri-test"

// file returns the path of a control file of dir in the hierarchy that
// has it.
func file(t *testing.T, m *Manager, dir, name string) string {
	t.Helper()
	if m.Version() == V2 {
		return filepath.Join(v2Mount, dir, name)
	}
	ctl, _, _ := strings.Cut(name, ".")
	return filepath.Join("/sys/fs/cgroup", ctl, dir, name)
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates control groups and must run as root ('make test' runs it as root)")
	}
	if _, err := DetectVersion(); err != nil {
		t.Fatalf("no usable cgroups here: %v", err)
	}
}

func TestGroupLifecycle(t *testing.T) {
	requireRoot(t)
	m, err := Open(testParent)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cgroup v%d, group %s", m.Version(), m.Dir())
	defer m.Close()
	// Paths: the group's directory in each hierarchy used, where the
	// mountinfo says it is (one for v2; cpuset and cpu for v1).
	paths := m.Paths()
	if want := map[Version]int{V1: 2, V2: 1}[m.Version()]; len(paths) < 1 || len(paths) > want {
		t.Errorf("Paths %q for cgroup v%d", paths, m.Version())
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() || !strings.HasSuffix(p, m.Dir()) {
			t.Errorf("Paths entry %s: not this group's directory (%v)", p, err)
		}
	}
	g, err := m.NewGroup("vm0", Limits{CPUs: []int{1}, Weight: 50, Quota: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.NewGroup("vm0", Limits{}); err == nil {
		t.Fatal("duplicate VM group accepted")
	}
	if _, err := m.NewGroup("../x", Limits{}); err == nil {
		t.Fatal("bad name accepted")
	}
	if got := read(t, file(t, m, g.Dir(), "cpuset.cpus")); got != "1" {
		t.Fatalf("cpuset.cpus = %q, want 1", got)
	}
	if m.Version() == V1 {
		if got := read(t, file(t, m, g.Dir(), "cpu.shares")); got != "512" {
			t.Fatalf("cpu.shares = %q, want 512", got)
		}
		if got := read(t, file(t, m, g.Dir(), "cpu.cfs_quota_us")); got != "20000" {
			t.Fatalf("cpu.cfs_quota_us = %q, want 20000", got)
		}
	} else {
		if got := read(t, file(t, m, g.Dir(), "cpu.weight")); got != "50" {
			t.Fatalf("cpu.weight = %q, want 50", got)
		}
		if got := read(t, file(t, m, g.Dir(), "cpu.max")); got != "20000 100000" {
			t.Fatalf("cpu.max = %q", got)
		}
	}

	// A vCPU thread joins the group; the cpuset confines it to CPU 1.
	v, err := threadvcpu.Start(context.Background(), threadvcpu.Config{Work: &threadvcpu.Spin{}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	if err := g.AddThread(v.TID()); err != nil {
		t.Fatal(err)
	}
	tids, err := g.Threads()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tids, []int{v.TID()}) {
		t.Fatalf("group threads %v, want [%d]", tids, v.TID())
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(v.TID(), &set); err != nil {
		t.Fatal(err)
	}
	if set.Count() != 1 || !set.IsSet(1) {
		t.Fatalf("thread in cpuset {1} may run on %d CPUs", set.Count())
	}
	if err := g.Update(Limits{CPUs: []int{1}, Weight: 200}); err != nil {
		t.Fatal(err)
	}
	if m.Version() == V1 {
		if got := read(t, file(t, m, g.Dir(), "cpu.shares")); got != "2048" {
			t.Fatalf("after update cpu.shares = %q, want 2048", got)
		}
		if got := read(t, file(t, m, g.Dir(), "cpu.cfs_quota_us")); got != "-1" {
			t.Fatalf("after update cpu.cfs_quota_us = %q, want -1 (no cap)", got)
		}
	}
	if err := g.Update(Limits{Weight: 20000}); err == nil {
		t.Fatal("weight 20000 accepted")
	}

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{m.Dir(), "/" + testParent} {
		if _, err := os.Stat(file(t, m, d, "cpuset.cpus")); !os.IsNotExist(err) {
			t.Fatalf("group %s still exists after Close: %v", d, err)
		}
	}
	cg := read(t, fmt.Sprintf("/proc/self/task/%d/cgroup", v.TID()))
	if strings.Contains(cg, testParent) {
		t.Fatalf("thread still in a colibri group after Close:\n%s", cg)
	}
}

func TestCleanStaleRemovesDeadProcessGroups(t *testing.T) {
	requireRoot(t)
	// Make a crashed run's groups: a pid above pid_max is never alive.
	m, err := Open(testParent)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dead := fmt.Sprintf("/%s/%d", testParent, 1<<30)
	var dirs []string
	if m.Version() == V1 {
		for _, ctl := range []string{"cpuset", "cpu"} {
			dirs = append(dirs, filepath.Join("/sys/fs/cgroup", ctl, dead, "vm0"))
		}
	} else {
		dirs = append(dirs, filepath.Join(v2Mount, dead, "vm0"))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := CleanStale(testParent)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{dead}) {
		t.Fatalf("removed %v, want [%s] (and not this live process's %s)", removed, dead, m.Dir())
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Dir(d)); !os.IsNotExist(err) {
			t.Fatalf("stale %s survived: %v", filepath.Dir(d), err)
		}
	}
	if _, err := os.Stat(file(t, m, m.Dir(), "cpuset.cpus")); err != nil {
		t.Fatalf("live group %s removed: %v", m.Dir(), err)
	}
}

// TestGroupLayout checks what each version needs of the files: v2's
// threaded subtree with the controllers enabled above the VM group, v1's
// cpuset.mems inherited (no task could join without it); and that
// Group.Delete moves a thread still in the group out.
func TestGroupLayout(t *testing.T) {
	requireRoot(t)
	m, err := Open(testParent)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	g, err := m.NewGroup("vm0", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Version() == V2 {
		if got := read(t, file(t, m, g.Dir(), "cgroup.type")); got != "threaded" {
			t.Errorf("VM group's cgroup.type = %q, want threaded", got)
		}
		if got := read(t, file(t, m, m.Dir(), "cgroup.type")); got != "domain threaded" {
			t.Errorf("process group's cgroup.type = %q, want domain threaded", got)
		}
		for _, d := range []string{"/", "/" + testParent, m.Dir()} {
			ctl := strings.Fields(read(t, file(t, m, d, "cgroup.subtree_control")))
			if !slices.Contains(ctl, "cpu") || !slices.Contains(ctl, "cpuset") {
				t.Errorf("%s/cgroup.subtree_control = %q: cpu and cpuset not both enabled", d, ctl)
			}
		}
		if got := read(t, file(t, m, g.Dir(), "cpu.max")); got != "max 100000" {
			t.Errorf("cpu.max = %q, want max 100000 (no cap)", got)
		}
		if cg := read(t, "/proc/self/cgroup"); !strings.Contains(cg+"\n", "0::"+m.Dir()+"\n") {
			t.Errorf("the process is not in %s:\n%s", m.Dir(), cg)
		}
	} else {
		root := read(t, file(t, m, "/", "cpuset.mems"))
		for _, d := range []string{m.Dir(), g.Dir()} {
			if got := read(t, file(t, m, d, "cpuset.mems")); got == "" || got != root {
				t.Errorf("%s cpuset.mems = %q, want the root's %q", d, got, root)
			}
		}
		if got := read(t, file(t, m, g.Dir(), "cpu.cfs_quota_us")); got != "-1" {
			t.Errorf("cpu.cfs_quota_us = %q, want -1 (no cap)", got)
		}
	}
	if tids, err := g.Threads(); err != nil || tids == nil || len(tids) != 0 {
		t.Errorf("new group's threads: %#v, %v; want none", tids, err)
	}

	v, err := threadvcpu.Start(context.Background(), threadvcpu.Config{Work: &threadvcpu.Spin{}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	if err := g.AddThread(v.TID()); err != nil {
		t.Fatal(err)
	}
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file(t, m, g.Dir(), "cpuset.cpus")); !os.IsNotExist(err) {
		t.Fatalf("group %s still exists after Delete: %v", g.Dir(), err)
	}
	cg := read(t, fmt.Sprintf("/proc/self/task/%d/cgroup", v.TID()))
	want := "0::" + m.Dir() // v2: back in the process's group
	if m.Version() == V1 {
		want = ":cpuset:/" // v1: the root group
	}
	if !strings.Contains(cg+"\n", want+"\n") {
		t.Errorf("after Delete the thread's groups are\n%s\nwant a line ending %q", cg, want)
	}
	if err := g.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

// TestNewGroupErrorNamesFileAndValue checks that a value the kernel
// refuses comes back naming the file and the value, and leaves no group.
func TestNewGroupErrorNamesFileAndValue(t *testing.T) {
	requireRoot(t)
	m, err := Open(testParent)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, err = m.NewGroup("vm0", Limits{CPUs: []int{1 << 20}})
	if err == nil {
		t.Fatal("cpuset {1048576} accepted")
	}
	t.Log(err)
	p := file(t, m, m.Dir()+"/vm0", "cpuset.cpus")
	if want := fmt.Sprintf("cgroup: create %s/vm0: writing \"1048576\" to %s: ", m.Dir(), p); !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want it to start %q", err, want)
	}
	var errno unix.Errno
	if !errors.As(err, &errno) {
		t.Errorf("error %q wraps no errno", err)
	}
	if _, err := os.Stat(filepath.Dir(p)); !os.IsNotExist(err) {
		t.Errorf("failed group left behind: %v", err)
	}
	if _, err := m.NewGroup("vm0", Limits{CPUs: []int{0}}); err != nil {
		t.Errorf("the name is not free again: %v", err)
	}
}
