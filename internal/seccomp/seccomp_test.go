package seccomp

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	gokvm "github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"
)

// childEnv names the scenario a re-executed test binary runs.
const childEnv = "COLIBRI_SECCOMP_CHILD"

func TestMain(m *testing.M) {
	if sc := os.Getenv(childEnv); sc != "" {
		// Keep the main thread (m0) to the main goroutine: a locked
		// goroutine that ends on m0 leaves it wedged rather than exited,
		// and the scenarios watch their threads exit.
		runtime.LockOSThread()
		err := runChild(sc)
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild runs one scenario in a re-executed test binary. Its exit
// status is what the parent checks: 0 all went as expected, 3 an error,
// 2 (Go's report of a SIGSYS) or death by SIGSYS when a call is refused.
func runChild(sc string) error {
	if rest, ok := strings.CutPrefix(sc, "bench:"); ok {
		layers, n, _ := strings.Cut(rest, ":")
		iters, err := strconv.Atoi(n)
		if err != nil {
			return err
		}
		return benchChild(layers, iters)
	}
	opts := Options{}
	if strings.HasSuffix(sc, "-kill") {
		opts.Action = Kill
		sc = strings.TrimSuffix(sc, "-kill")
	}
	if err := Install(opts); err != nil {
		return err
	}
	switch sc {
	case "vcpu-forbidden":
		// A vCPU thread opens a file: not in its list.
		return onLockedThread(VCPU, func() error {
			fd, err := unix.Open("/proc/self/status", unix.O_RDONLY, 0)
			if err == nil {
				unix.Close(fd)
			}
			return fmt.Errorf("open on a vCPU thread was not stopped (err %v)", err)
		})
	case "poller-forbidden":
		return onLockedThread(Poller, func() error {
			_, _, e := unix.Syscall(unix.SYS_SCHED_SETAFFINITY, 0, 0, 0)
			return fmt.Errorf("sched_setaffinity on a poller was not stopped (errno %v)", e)
		})
	case "process-forbidden":
		// Any goroutine: a new socket that is not AF_UNIX.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		return fmt.Errorf("socket(AF_INET) was not stopped (fd %d, err %v)", fd, err)
	case "vcpu-ioctl-request", "process-ioctl-request":
		// An ioctl whose request is not allowed, its low word being an
		// allowed call's number (close): a filter that compared it with
		// call numbers once the request's tests failed let it through.
		f := func() error {
			_, _, e := unix.Syscall(unix.SYS_IOCTL, ^uintptr(0), unix.SYS_CLOSE, 0)
			return fmt.Errorf("ioctl(-1, %d) was not stopped (errno %v)", unix.SYS_CLOSE, e)
		}
		if sc == "process-ioctl-request" {
			return f()
		}
		return onLockedThread(VCPU, f)
	case "process-exec":
		err := syscall.Exec("/bin/true", []string{"true"}, nil)
		return fmt.Errorf("execve was not stopped (err %v)", err)
	case "vcpu-allowed":
		return vcpuAllowed()
	}
	return fmt.Errorf("unknown scenario %q", sc)
}

// onLockedThread runs f on a goroutine locked to its thread for good,
// after stacking kind's filter, and returns f's error.
func onLockedThread(kind Kind, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := Thread(kind); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// vcpuAllowed: a filtered vCPU thread does what vCPU threads do (eventfds,
// writes, futexes, memory, goroutines that need new threads, which the
// runtime must create without it), and afterwards threads the runtime
// created meanwhile still make calls only the process list allows.
func vcpuAllowed() error {
	var tid int
	err := onLockedThread(VCPU, func() error {
		tid = unix.Gettid()
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			return fmt.Errorf("eventfd2: %w", err)
		}
		if _, err := unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		var b [8]byte
		if _, err := unix.Read(efd, b[:]); err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if err := unix.Close(efd); err != nil {
			return fmt.Errorf("close: %w", err)
		}
		// Allocate and collect: heap growth, GC stops and starts
		// (netpoll), assists.
		var keep [][]byte
		for i := 0; i < 64; i++ {
			keep = append(keep, make([]byte, 1<<20))
		}
		runtime.GC()
		_ = keep
		// Goroutines blocked in system calls make the runtime start new
		// threads while this one is locked: it must ask the template
		// thread, or they would carry the vCPU filter.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				fd, err := unix.Open("/proc/self/status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					errs <- err
					return
				}
				unix.Close(fd)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			return fmt.Errorf("a goroutine started from the vCPU thread: open: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The vCPU thread exits with its goroutine (soon after it returned).
	for i := 0; ; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); err != nil {
			break
		}
		if i == 1000 {
			return fmt.Errorf("vCPU thread %d (pid %d) still exists 1s after its goroutine ended: %s", tid, os.Getpid(), statusOf(tid))
		}
		time.Sleep(time.Millisecond)
	}
	// Every other thread has one filter: the process list.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		st, err := os.ReadFile("/proc/self/task/" + t.Name() + "/status")
		if err != nil {
			continue // exited meanwhile
		}
		if !bytes.Contains(st, []byte("Seccomp:\t2\n")) {
			return fmt.Errorf("thread %s: not in seccomp filter mode", t.Name())
		}
		if bytes.Contains(st, []byte("Seccomp_filters:")) && !bytes.Contains(st, []byte("Seccomp_filters:\t1\n")) {
			return fmt.Errorf("thread %s carries more than the process-wide filter:\n%s", t.Name(), st)
		}
	}
	return nil
}

// runScenario re-executes the test binary with scenario sc.
func runScenario(t *testing.T, sc string) (*exec.ExitError, string) {
	t.Helper()
	if !supported(t) {
		t.Fatal("seccomp filters cannot be installed here")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), childEnv+"="+sc)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil {
		return nil, stderr.String()
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("running the child: %v", err)
	}
	return ee, stderr.String()
}

func supported(t *testing.T) bool {
	// seccomp(SECCOMP_GET_ACTION_AVAIL) on KILL_PROCESS: 0 where filters work.
	act := uint32(unix.SECCOMP_RET_KILL_PROCESS)
	_, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&act)))
	if e != 0 {
		t.Logf("seccomp(SECCOMP_GET_ACTION_AVAIL): %v", e)
	}
	return e == 0
}

// wantTrapped checks that the child was stopped by a SIGSYS: Go's report
// and status 2, or killed by the signal.
func wantTrapped(t *testing.T, ee *exec.ExitError, stderr string) {
	t.Helper()
	if ee == nil {
		t.Fatalf("the child exited 0: the forbidden call was not stopped\n%s", stderr)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled() && ws.Signal() == syscall.SIGSYS:
	case ws.Exited() && ws.ExitStatus() == 2 && strings.Contains(stderr, "SIGSYS: bad system call"):
	default:
		t.Fatalf("the child ended with %v, not by SIGSYS:\n%s", ee, stderr)
	}
}

func TestVCPUForbiddenCallStops(t *testing.T) {
	ee, stderr := runScenario(t, "vcpu-forbidden")
	wantTrapped(t, ee, stderr)
	// The report names the call site.
	if !strings.Contains(stderr, "SIGSYS: bad system call") || !strings.Contains(stderr, "runChild") {
		t.Errorf("Go's report does not show where the call was made:\n%s", stderr)
	}
}

func TestVCPUForbiddenCallKills(t *testing.T) {
	ee, stderr := runScenario(t, "vcpu-forbidden-kill")
	if ee == nil {
		t.Fatalf("the child exited 0\n%s", stderr)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
		t.Fatalf("the child ended with %v, want killed by SIGSYS\n%s", ee, stderr)
	}
}

func TestPollerForbiddenCallStops(t *testing.T) {
	ee, stderr := runScenario(t, "poller-forbidden")
	wantTrapped(t, ee, stderr)
}

func TestProcessForbiddenCallsStop(t *testing.T) {
	for _, sc := range []string{"process-forbidden", "process-exec", "process-ioctl-request", "vcpu-ioctl-request"} {
		t.Run(sc, func(t *testing.T) {
			ee, stderr := runScenario(t, sc)
			wantTrapped(t, ee, stderr)
		})
	}
}

func TestVCPUAllowedAndNoLeak(t *testing.T) {
	ee, stderr := runScenario(t, "vcpu-allowed")
	if ee != nil {
		t.Fatalf("the child failed: %v\n%s", ee, stderr)
	}
}

func TestPoliciesAssemble(t *testing.T) {
	for _, opts := range []Options{{}, {Action: Kill, API: true}, {Action: Log, DropTo: &IDs{UID: 65534, GID: 65534}}} {
		for _, k := range Kinds() {
			prog, err := assemble(k, opts, 1234)
			if err != nil {
				t.Fatalf("%v %+v: %v", k, opts, err)
			}
			t.Logf("%v: %d instructions", k, prog.Len)
		}
	}
}

// Every call a thread list allows is in the process list too: filters
// stack, so a call missing there would be refused all the same.
func TestThreadListsWithinProcessList(t *testing.T) {
	opts := Options{DropTo: &IDs{UID: 1, GID: 1}}
	proc := map[string]bool{}
	pf, err := policy(Process, opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range pf.rules {
		proc[r.name] = r.errno == 0
	}
	for _, k := range []Kind{VCPU, Poller, Scheduler} {
		f, err := policy(k, opts, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range f.rules {
			if r.errno != 0 {
				t.Errorf("%v answers %s with an errno: only the process list does that", k, r.name)
			}
			if !proc[r.name] {
				t.Errorf("%v allows %s, which the process list does not", k, r.name)
			}
		}
	}
}

func TestKVMIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"KVM_RUN", kvmRun, gokvm.IIO(0x80)},
		{"KVM_GET_REGS", kvmGetRegs, gokvm.IIOR(0x81, 144)},
		{"KVM_GET_SREGS", kvmGetSregs, gokvm.IIOR(0x83, 312)},
		{"KVM_KVMCLOCK_CTRL", kvmKVMClockCtrl, gokvm.IIO(0xad)},
		{"KVM_IRQ_LINE", kvmIRQLine, gokvm.IIOW(0x61, 8)},
		{"KVM_SET_GSI_ROUTING", kvmSetGSIRoute, gokvm.IIOW(0x6a, 8)},
		{"KVM_IRQFD", kvmIRQFD, gokvm.IIOW(0x76, 32)},
		{"KVM_IOEVENTFD", kvmIOEventFD, gokvm.IIOW(0x79, 64)},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
		if (c.got>>8)&0xff != ioctlKVM {
			t.Errorf("%s %#x is not of type KVMIO", c.name, c.got)
		}
	}
}

func TestThreadWithoutInstallIsNoop(t *testing.T) {
	if _, ok := Installed(); ok {
		t.Fatal("the test process has a filter")
	}
	if err := onLockedThread(VCPU, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestParseAction(t *testing.T) {
	for _, a := range []Action{Trap, Kill, Log} {
		got, err := ParseAction(a.String())
		if err != nil || got != a {
			t.Errorf("ParseAction(%q) = %v, %v", a, got, err)
		}
	}
	if _, err := ParseAction("allow"); err == nil {
		t.Error("ParseAction(allow) accepted")
	}
}

func statusOf(tid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
	s := string(b)
	if i := strings.Index(s, "State:"); i >= 0 {
		s = s[i:]
		if j := strings.IndexByte(s, '\n'); j >= 0 {
			s = s[:j]
		}
	}
	return s
}
