package privdrop

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/seccomp"
)

const childEnv = "COLIBRI_PRIVDROP_CHILD"

var nobody = IDs{UID: 65534, GID: 65534}

func TestMain(m *testing.M) {
	if sc := os.Getenv(childEnv); sc != "" {
		runtime.LockOSThread() // keep m0 out of the scenarios' locked threads
		if err := runChild(sc, os.Getenv("COLIBRI_PRIVDROP_SECRET")); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild drops to nobody with other threads alive: locked ones (one
// under the vCPU filter when sc is "seccomp") and goroutines in
// syscalls. Then every thread must be nobody with no capability, a
// root-only file must be out of reach and a file opened before must
// still be usable.
func runChild(sc, secret string) error {
	if sc == "seccomp" {
		if err := seccomp.Install(seccomp.Options{DropTo: &seccomp.IDs{UID: nobody.UID, GID: nobody.GID}}); err != nil {
			return err
		}
	}
	before, err := os.Open(secret)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	started := make(chan int)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if sc == "seccomp" {
			if err := seccomp.Thread(seccomp.VCPU); err != nil {
				done <- err
				close(started)
				return
			}
		}
		started <- unix.Gettid()
		<-stop
		// Still usable after the drop from a filtered thread.
		var b [8]byte
		_, err := unix.Pread(int(before.Fd()), b[:], 0)
		done <- err
	}()
	tid, ok := <-started
	if !ok {
		return <-done
	}
	if err := Drop(nobody); err != nil {
		return err
	}
	ts, err := Threads(os.Getpid())
	if err != nil {
		return err
	}
	found := false
	for _, t := range ts {
		if t.TID == tid {
			found = true
			if sc == "seccomp" && t.SeccompFilters >= 0 && t.SeccompFilters != 2 {
				return fmt.Errorf("the filtered thread has %d filters, want 2", t.SeccompFilters)
			}
		}
	}
	if !found {
		return fmt.Errorf("the locked thread %d is gone", tid)
	}
	if _, err := os.Open(secret); !errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("opening a root-only file after the drop: %v, want permission denied", err)
	}
	// (Under the filters setresuid(0) is not even made: SIGSYS.)
	if sc != "seccomp" {
		if err := syscall.Setresuid(0, 0, 0); err == nil {
			return errors.New("setresuid(0) succeeded after the drop")
		}
	}
	close(stop)
	if err := <-done; err != nil {
		return fmt.Errorf("reading a file opened before the drop: %w", err)
	}
	return nil
}

func runScenario(t *testing.T, sc string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("dropping privileges needs root; the tests run as root here")
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	// nobody must reach the directory to be refused by the file's mode.
	if err := os.Chmod(filepath.Dir(secret), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), childEnv+"="+sc, "COLIBRI_PRIVDROP_SECRET="+secret)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
}

func TestDropAllThreads(t *testing.T) { runScenario(t, "plain") }

// The drop after the seccomp filters (as colibri does it): every filter,
// a vCPU thread's included, lets the drop's calls through.
func TestDropUnderSeccomp(t *testing.T) { runScenario(t, "seccomp") }

func TestParseIDs(t *testing.T) {
	for in, want := range map[string]IDs{"65534": {65534, 65534}, "1000:100": {1000, 100}, "0:0": {}} {
		got, err := ParseIDs(in)
		if err != nil || got != want {
			t.Errorf("ParseIDs(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "nobody", "1:", ":1", "-1", "1:x", "4294967295", "99999999999"} {
		if _, err := ParseIDs(bad); err == nil {
			t.Errorf("ParseIDs(%q) accepted", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	const status = "Name:\tcolibri\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nGroups:\t\n" +
		"CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n" +
		"NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t2\n"
	c, err := parseStatus([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	want := Creds{UIDs: [4]int{65534, 65534, 65534, 65534}, GIDs: [4]int{65534, 65534, 65534, 65534},
		CapBnd: 0x1ffffffffff, NoNewPrivs: 1, Seccomp: 2, SeccompFilters: 2}
	if fmt.Sprint(c) != fmt.Sprint(want) {
		t.Errorf("parsed %+v, want %+v", c, want)
	}
	for _, bad := range []string{"Uid:\t1 2\n", strings.Replace(status, "CapEff:\t0000000000000000", "CapEff:\tzz", 1), "Name:\tx\n"} {
		if _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus accepted %q", bad)
		}
	}
}

func TestCheckRefusesRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: nothing to refuse")
	}
	if err := Check(os.Getpid(), nobody); err == nil {
		t.Error("Check passed a process running as root")
	}
}

func TestChown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("chown needs root; the tests run as root here")
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(dir, "a", "b", "f"), nil, 0o644)
	if err := Chown(nobody, filepath.Join(dir, "a"), filepath.Join(dir, "missing")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "a/b", "a/b/f"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s owned by %d:%d", p, st.Uid, st.Gid)
		}
	}
}
