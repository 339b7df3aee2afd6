package cgroup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests need no privilege and no cgroup file system.

func TestCPUMax(t *testing.T) {
	for _, c := range []struct {
		l    Limits
		want string
	}{
		{Limits{}, "max 100000"},
		{Limits{Period: 10 * time.Millisecond}, "max 10000"},
		{Limits{Quota: 20 * time.Millisecond}, "20000 100000"},
		{Limits{Quota: 50 * time.Millisecond, Period: 200 * time.Millisecond}, "50000 200000"},
		{Limits{Quota: 1500 * time.Microsecond, Period: time.Second}, "1500 1000000"},
		{Limits{Quota: 3 * time.Second}, "3000000 100000"}, // more than one CPU's worth
	} {
		if got := cpuMax(c.l); got != c.want {
			t.Errorf("cpuMax(quota %v, period %v) = %q, want %q", c.l.Quota, c.l.Period, got, c.want)
		}
	}
}

func TestV1CPUValues(t *testing.T) {
	for _, c := range []struct {
		l    Limits
		want [][2]string
	}{
		{Limits{}, [][2]string{{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", "-1"}}},
		{Limits{Weight: 50, Quota: 20 * time.Millisecond}, [][2]string{
			{"cpu.shares", "512"}, {"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", "20000"}}},
		{Limits{Weight: 100, Period: 50 * time.Millisecond}, [][2]string{
			{"cpu.shares", "1024"}, {"cpu.cfs_period_us", "50000"}, {"cpu.cfs_quota_us", "-1"}}},
		{Limits{Weight: 10000}, [][2]string{
			{"cpu.shares", "102400"}, {"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", "-1"}}},
	} {
		if got := v1CPUValues(c.l); !slices.Equal(got, c.want) {
			t.Errorf("v1CPUValues(%+v) = %v, want %v", c.l, got, c.want)
		}
	}
	for w, want := range map[uint64]uint64{1: 10, 100: 1024, 200: 2048, 10000: 102400} {
		if got := cpuShares(w); got != want {
			t.Errorf("cpuShares(%d) = %d, want %d", w, got, want)
		}
	}
	if got := cpuShares(0); got != 2 {
		t.Errorf("cpuShares(0) = %d, want the kernel's minimum 2", got)
	}
}

func TestCPUList(t *testing.T) {
	if got := cpuList([]int{0, 2, 3}); got != "0,2,3" {
		t.Errorf("cpuList = %q", got)
	}
	if got := cpuList([]int{7}); got != "7" {
		t.Errorf("cpuList = %q", got)
	}
	if got := cpuList(nil); got != "" {
		t.Errorf("cpuList(nil) = %q", got)
	}
}

func TestParseIDs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []int
	}{
		{"", []int{}},
		{"\n", []int{}},
		{"1234\n", []int{1234}},
		{"12\n34\n\n56", []int{12, 34, 56}},
		{" 7 \n", []int{7}},
		{"4194304\n", []int{4194304}}, // pid_max's ceiling
	} {
		got, err := parseIDs("f", c.in)
		if err != nil {
			t.Errorf("parseIDs(%q): %v", c.in, err)
			continue
		}
		if got == nil || !slices.Equal(got, c.want) {
			t.Errorf("parseIDs(%q) = %#v, want %#v", c.in, got, c.want)
		}
	}
	for _, in := range []string{"12\nx\n", "-1\n", "0\n", "1 2\n", "99999999999\n"} {
		_, err := parseIDs("/sys/fs/cgroup/g/cgroup.threads", in)
		if err == nil {
			t.Errorf("parseIDs(%q) accepted", in)
			continue
		}
		if !strings.HasPrefix(err.Error(), "/sys/fs/cgroup/g/cgroup.threads: bad thread or process id ") {
			t.Errorf("parseIDs(%q): error %q does not name the file", in, err)
		}
	}
}

func TestIsUnified(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-mount")
	_, err := isUnified(missing)
	if err == nil {
		t.Fatalf("isUnified(%s) gave no error", missing)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %q does not wrap ENOENT", err)
	}
	if !strings.HasPrefix(err.Error(), "cgroup: no cgroup file system mounted at "+missing+" (statfs: ") {
		t.Errorf("error %q does not say what is missing where", err)
	}
	if u, err := isUnified(t.TempDir()); err != nil || u {
		t.Errorf("a temporary directory: unified %v, error %v; want false, nil", u, err)
	}

	// /sys/fs/cgroup as the mount table has it: unified iff its last
	// mount there is cgroup2.
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		t.Fatal(err)
	}
	fstype := ""
	for _, line := range strings.Split(string(b), "\n") {
		left, right, ok := strings.Cut(line, " - ")
		l, r := strings.Fields(left), strings.Fields(right)
		if ok && len(l) >= 5 && len(r) >= 1 && l[4] == v2Mount {
			fstype = r[0]
		}
	}
	u, err := isUnified(v2Mount)
	if err != nil {
		t.Fatal(err)
	}
	if u != (fstype == "cgroup2") {
		t.Errorf("isUnified(%s) = %v, but %s mounts %q there", v2Mount, u, mountinfo, fstype)
	}
	t.Logf("%s: %q, unified %v", v2Mount, fstype, u)
}

func TestParseV1Mounts(t *testing.T) {
	for _, c := range []struct {
		name, in    string
		cpuset, cpu string
	}{
		{"separate", `25 21 0:22 / /sys/fs/cgroup rw,relatime shared:8 - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/systemd rw,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
28 25 0:25 / /sys/fs/cgroup/cpu rw,relatime shared:11 - cgroup cgroup rw,cpu
29 25 0:26 / /sys/fs/cgroup/cpuacct rw,relatime shared:12 - cgroup cgroup rw,cpuacct
30 25 0:27 / /sys/fs/cgroup/cpuset rw,relatime shared:13 - cgroup cgroup rw,cpuset
`, "/sys/fs/cgroup/cpuset", "/sys/fs/cgroup/cpu"},
		{"cpu,cpuacct; no optional fields; first mount wins", `30 25 0:27 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset,clone_children
31 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
40 1 0:28 / /mnt/again rw - cgroup cgroup rw,cpu,cpuacct
`, "/sys/fs/cgroup/cpuset", "/sys/fs/cgroup/cpu,cpuacct"},
		{"escaped mount point", `31 25 0:28 / /mnt/cg\040cpu rw - cgroup cgroup rw,cpu,cpuset
`, "/mnt/cg cpu", "/mnt/cg cpu"},
		{"no cpuset; cpuacct is not cpu", `29 25 0:26 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
32 25 0:29 / /sys/fs/cgroup/cpuset rw - cgroup2 cgroup2 rw,cpuset
bad line
`, "", ""},
		{"unified only", `25 21 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate
`, "", ""},
	} {
		cpuset, cpu := parseV1Mounts(c.in)
		if cpuset != c.cpuset || cpu != c.cpu {
			t.Errorf("%s: cpuset %q, cpu %q; want %q, %q", c.name, cpuset, cpu, c.cpuset, c.cpu)
		}
	}
	if got := unescapeMount(`a\134b\011c\\x\04`); got != "a\\b\tc\\\\x\\04" {
		t.Errorf("unescapeMount = %q", got)
	}
}

func TestValidName(t *testing.T) {
	for _, s := range []string{"colibri", "vm0", "0", "a.b_c-d", "VM-1", strings.Repeat("x", 64)} {
		if !validName(s) {
			t.Errorf("validName(%q) = false", s)
		}
	}
	for _, s := range []string{"", ".", "..", "../x", "a/b", "-x", "_x", ".x", "a b", "vm\n", "é", strings.Repeat("x", 65)} {
		if validName(s) {
			t.Errorf("validName(%q) = true", s)
		}
	}
	for s, want := range map[string]bool{"123": true, "0": true, "": false, "12a": false, "-1": false, "+1": false} {
		if allDigits(s) != want {
			t.Errorf("allDigits(%q) = %v", s, !want)
		}
	}
}

func TestWriteFileErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cpuset.cpus")
	err := writeFile(p, "0-1")
	if err == nil {
		t.Fatal("writing a missing file succeeded (it must not be created)")
	}
	if want := `writing "0-1" to ` + p + `: no such file or directory`; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if !errors.Is(err, unix.ENOENT) {
		t.Errorf("error %q does not wrap ENOENT", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("writeFile created %s", p)
	}
	if err := writeRetry(p, "1", unix.EINVAL, 3, time.Hour); !errors.Is(err, unix.ENOENT) {
		t.Errorf("writeRetry retried or lost an error it should not retry: %v", err)
	}

	if err := os.WriteFile(p, []byte("7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(p, "1"); err != nil {
		t.Fatal(err)
	}
	// Not truncated (cgroupfs needs no truncation; a plain file shows it).
	if b, err := os.ReadFile(p); err != nil || string(b) != "1\n" {
		t.Errorf("after writeFile: %q, %v; want \"1\\n\" (one write, no truncation)", b, err)
	}
	if _, err := readFile(filepath.Join(dir, "x")); err == nil || err.Error() != "reading "+filepath.Join(dir, "x")+": no such file or directory" {
		t.Errorf("readFile error %v", err)
	}
	if ids, err := readIDs(p); err != nil || !slices.Equal(ids, []int{1}) {
		t.Errorf("readIDs of \"1\\n\": %v, %v", ids, err)
	}
	if err := os.WriteFile(p, []byte("1\nx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readIDs(p); err == nil || err.Error() != p+`: bad thread or process id "x"` {
		t.Errorf("readIDs of \"1\\nx\\n\": %v", err)
	}
}

func TestRemoveTree(t *testing.T) {
	top := filepath.Join(t.TempDir(), "g")
	for _, d := range []string{"a/b", "a/c", "d"} {
		if err := os.MkdirAll(filepath.Join(top, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var order []string
	if err := removeTree(top, func(d string) { order = append(order, strings.TrimPrefix(d, top)) }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"/a/b", "/a/c", "/a", "/d", ""}; !slices.Equal(order, want) {
		t.Errorf("groups visited %q, want children first %q", order, want)
	}
	if _, err := os.Stat(top); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s survived", top)
	}
	if err := removeTree(top, nil); err != nil {
		t.Errorf("removing a tree already gone: %v", err)
	}

	// A directory rmdir cannot remove: the error names it, at once (only
	// EBUSY is retried).
	if err := os.MkdirAll(filepath.Join(top, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(top, "a", "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := removeTree(top, nil)
	if err == nil {
		t.Fatal("removed a non-empty directory")
	}
	if !errors.Is(err, unix.ENOTEMPTY) || !strings.Contains(err.Error(), "removing "+filepath.Join(top, "a")+": ") {
		t.Errorf("error %q", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("took %v (retries take 150ms): an error other than EBUSY was retried", d)
	}
}
