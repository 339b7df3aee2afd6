package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/privdrop"
	"github.com/colibrivm/colibri/internal/testenv"
)

func TestConfineFlags(t *testing.T) {
	for _, c := range []struct {
		seccomp, user string
		on            bool
		ids           *privdrop.IDs
		bad           bool
	}{
		{seccomp: "trap", on: true},
		{seccomp: "on", on: true},
		{seccomp: "kill", on: true},
		{seccomp: "log", on: true, user: "65534", ids: &privdrop.IDs{UID: 65534, GID: 65534}},
		{seccomp: "off", user: "1000:100", ids: &privdrop.IDs{UID: 1000, GID: 100}},
		{seccomp: "allow", bad: true},
		{seccomp: "trap", user: "nobody", bad: true},
	} {
		on, _, ids, err := confineFlags{seccomp: c.seccomp, user: c.user}.parse()
		if (err != nil) != c.bad || on != c.on || fmt.Sprint(ids) != fmt.Sprint(c.ids) {
			t.Errorf("--seccomp=%s --user=%q: on %v ids %v err %v", c.seccomp, c.user, on, ids, err)
		}
	}
}

// nobody is the user the KVM tests drop to.
var nobody = privdrop.IDs{UID: 65534, GID: 65534}

// startColibri starts the colibri binary, echoing its stdout lines to
// lines (closed at EOF) and keeping stdout and stderr.
func startColibri(t *testing.T, ctx context.Context, bin string, args ...string) (*exec.Cmd, <-chan string, *testenv.Buffer, *testenv.Buffer) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 15 * time.Second
	var stdout, stderr testenv.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(io.TeeReader(pipe, &stdout))
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody listens any more
			}
		}
	}()
	return cmd, lines, &stdout, &stderr
}

// waitLine waits for a line containing want.
func waitLine(t *testing.T, lines <-chan string, want string) bool {
	t.Helper()
	for l := range lines {
		if strings.Contains(l, want) {
			return true
		}
	}
	return false
}

// checkConfined checks every thread of pid runs as ids with no group and
// no capability, under no_new_privs and seccomp filters, and returns the
// threads.
func checkConfined(t *testing.T, pid int, ids privdrop.IDs) []privdrop.Creds {
	t.Helper()
	ts, err := privdrop.Threads(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := privdrop.Check(pid, ids); err != nil {
		t.Error(err)
	}
	stacked := 0
	for _, c := range ts {
		if c.NoNewPrivs != 1 || c.Seccomp != 2 {
			t.Errorf("thread %d: no_new_privs %d, seccomp mode %d; want 1 and 2 (filter)", c.TID, c.NoNewPrivs, c.Seccomp)
		}
		if c.SeccompFilters >= 2 {
			stacked++
		}
	}
	if stacked == 0 {
		t.Error("no thread has a filter of its own kind stacked on the process filter")
	}
	t.Logf("%d threads, all uid/gid %v, no groups, CapPrm=CapEff=CapAmb=0 (CapBnd %#x), no_new_privs, seccomp filters; %d with a thread filter stacked",
		len(ts), ids, ts[0].CapBnd, stacked)
	return ts
}

// TestKVMBootUser: colibri boot --user 65534:65534 (with the default
// filters) runs the guest with its disk and rng as nobody, and /proc
// shows every thread of colibri as nobody with no capability while the
// guest runs.
func TestKVMBootUser(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	disk := filepath.Join(t.TempDir(), "disk.ext4")
	src, err := os.ReadFile(filepath.Join(testenv.Images(t), "disk.ext4"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(disk, src, 0o600); err != nil { // root's alone: opened before the drop
		t.Fatal(err)
	}
	run := "mount /dev/vda /mnt && cat /mnt/hello.txt && echo written-by-guest > /mnt/guest.txt && sync && umount /mnt && " +
		"echo rng-bytes=$(head -c 64 /dev/hwrng | wc -c) && echo guest-ready && sleep 5"
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd, lines, stdout, stderr := startColibri(t, ctx, bin, "boot", "--user", nobody.String(), "--mem", "256M", "--disk", disk,
		"--cmdline", `console=ttyS0 quiet panic=-1 colibri.run="`+run+`"`)
	ready := waitLine(t, lines, "guest-ready")
	if ready {
		checkConfined(t, cmd.Process.Pid, nobody)
	}
	for range lines {
	}
	err = cmd.Wait()
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	if err != nil {
		t.Fatalf("colibri boot --user: %v", err)
	}
	if !ready {
		t.Fatal("the guest never said it was ready")
	}
	for _, want := range []string{"hello from the colibri disk image", "rng-bytes=64", "colibri-guest: exit status 0"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("console lacks %q", want)
		}
	}
	got, err := exec.Command("debugfs", "-R", "cat /guest.txt", disk).Output()
	if err != nil {
		t.Fatalf("reading guest.txt back with debugfs: %v", err)
	}
	if strings.TrimSpace(string(got)) != "written-by-guest" {
		t.Errorf("file the guest wrote reads %q on the host", got)
	}
}

// TestKVMUpUser: colibri up --user with the central scheduler: the VM's
// cgroup is made and handed over before the drop, the scheduler moves
// and parks vCPU threads as nobody without errors, the vCPU thread is in
// its VM's cgroup, --stats-json is written at exit.
func TestKVMUpUser(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	// --stats-json's directory must be reachable by nobody.
	dir, err := os.MkdirTemp("", "colibri-upuser-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := "pollers: {}\n" +
		"sched: {policy: central, cores: [0], period: 1ms, threshold: 1ms}\n" +
		"switches: [{name: sw0}]\n" +
		"vms:\n" +
		"  - {name: vm1, class: lc, nics: [{switch: sw0}], append: 'colibri.run=\"ip link set eth0 up && echo guest-ready && sleep 5\"'}\n"
	file := filepath.Join(dir, "up.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	statsPath := filepath.Join(dir, "stats.json")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd, lines, stdout, stderr := startColibri(t, ctx, bin, "up", file, "--user", nobody.String(), "--stats-json", statsPath)
	ready := waitLine(t, lines, "guest-ready")
	inGroup := 0
	if ready {
		pid := cmd.Process.Pid
		for _, c := range checkConfined(t, pid, nobody) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", pid, c.TID))
			if bytes.Contains(b, []byte(fmt.Sprintf("/%d/vm1\n", pid))) {
				inGroup++
			}
		}
	}
	for range lines {
	}
	err = cmd.Wait()
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	if err != nil {
		t.Fatalf("colibri up --user: %v", err)
	}
	if !ready {
		t.Fatal("the guest never said it was ready")
	}
	if inGroup != 1 {
		t.Errorf("%d threads in the VM's cgroup, want its one vCPU thread", inGroup)
	}
	raw, err := os.ReadFile(statsPath)
	if err != nil {
		t.Fatalf("--stats-json: %v", err)
	}
	var st struct {
		Sched *struct {
			Passes, Errors uint64
		} `json:"sched"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("--stats-json: %v", err)
	}
	if st.Sched == nil || st.Sched.Passes == 0 || st.Sched.Errors != 0 {
		t.Errorf("--stats-json sched = %+v, want passes and no errors", st.Sched)
	}
}
