package observer

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/sched"
)

func newObserver(t *testing.T) *Observer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test loads eBPF programs and must run as root ('make test' runs it as root)")
	}
	if runtime.NumCPU() < 2 {
		t.Fatalf("needs 2 CPUs, have %d", runtime.NumCPU())
	}
	o, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func futex(addr *uint32, op, val uintptr) {
	_, _, _ = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), op|128 /* FUTEX_PRIVATE_FLAG */, val, 0, 0, 0)
}

func futexWait(addr *uint32, val uint32) { futex(addr, 0, uintptr(val)) }
func futexWake(addr *uint32)             { futex(addr, 1, 1) }

// pinned starts a locked OS thread pinned to cpu; it sends its tid, then
// runs f until f returns. It returns the tid and a channel closed when f
// has returned.
func pinned(t *testing.T, cpu int, f func()) (int, <-chan struct{}) {
	t.Helper()
	tidc := make(chan int)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with us
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Error(err)
		}
		tidc <- unix.Gettid()
		f()
	}()
	return <-tidc, done
}

// A thread woken while it is still on its CPU (it queued itself on a
// futex and the wake came before it blocked: the kernel's try_to_wake_up
// then only sets it TASK_RUNNING and reports sched_wakeup, and no
// sched_switch follows) stays Running. The watched thread checks itself
// around every futex wait: if it was recorded running before and did not
// leave its CPU meanwhile (its recorded run time, which grows when it is
// switched out, is unchanged), its record must still say Running on its
// CPU.
func TestWakeupOfRunningThreadStaysRunning(t *testing.T) {
	o := newObserver(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))

	var word, stop uint32
	slotc := make(chan int, 1)
	var checks, stayed, bad, missed atomic.Uint64
	var badState atomic.Value
	tid, done := pinned(t, 1, func() {
		slot := <-slotc
		r := o.rec(slot)
		for atomic.LoadUint32(&stop) == 0 {
			st := sched.ThreadState{}
			o.Load(slot, &st)
			ran := atomic.LoadUint64(&r.RunNs)
			futexWait(&word, 0)
			if st.State != sched.Running {
				// Its record was already wrong or torn: the check
				// below would not be sound.
				continue
			}
			st = sched.ThreadState{}
			o.Load(slot, &st)
			checks.Add(1)
			if atomic.LoadUint64(&r.RunNs) != ran {
				// It was switched out and back in: not the case
				// under test. (On this project's development VMs
				// the switch back in is, about once in 10⁵, not
				// reported; count those.)
				if st.State != sched.Running {
					missed.Add(1)
				}
				continue
			}
			if st.State == sched.Unknown {
				continue // a read torn by a concurrent update
			}
			stayed.Add(1)
			if st.State != sched.Running || st.CPU != 1 {
				if bad.Add(1) == 1 {
					badState.Store(fmt.Sprintf("%s on CPU %d for %v", st.State, st.CPU, time.Duration(sched.Nanotime()-st.Since)))
				}
			}
		}
	})
	slot, err := o.Watch(tid)
	if err != nil {
		t.Fatal(err)
	}
	// The window for the case under test is a few instructions wide: on
	// an idle machine 20 hits take well under a second, on CI's loaded
	// 2-core VM under -race they came at ~4 a second. The test ends at
	// the 20th; the deadline only bounds a kernel that never reports one.
	const deadline = 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	// The waker works in bursts, to leave CPU 0 to others half the time.
	_, wdone := pinned(t, 0, func() {
		for ctx.Err() == nil && atomic.LoadUint32(&stop) == 0 {
			for end := sched.Nanotime() + 200e3; sched.Nanotime() < end; {
				futexWake(&word)
			}
			time.Sleep(200 * time.Microsecond)
		}
	})
	slotc <- slot
	// Run until the kernel has reported enough wakeups of the thread on
	// its CPU (each is a chance for the bug).
	for ctx.Err() == nil && o.Totals(slot).WakeupsOnCPU < 20 {
		time.Sleep(time.Millisecond)
	}
	atomic.StoreUint32(&stop, 1)
	atomic.StoreUint32(&word, 1)
	futexWake(&word)
	<-wdone
	<-done
	tot := o.Totals(slot)
	t.Logf("%d self-checks, %d without leaving the CPU, %d wrong; %d unreported switches in; totals %+v",
		checks.Load(), stayed.Load(), bad.Load(), missed.Load(), tot)
	if bad.Load() != 0 {
		t.Fatalf("%d of %d times the thread, woken without leaving its CPU, was recorded as not running (first: %v)", bad.Load(), stayed.Load(), badState.Load())
	}
	if tot.WakeupsOnCPU < 20 {
		t.Fatalf("the kernel reported only %d wakeups of the thread while on its CPU in %v: the test did not exercise them", tot.WakeupsOnCPU, deadline)
	}
	if tot.Wakeups == 0 || tot.Switches == 0 {
		t.Fatalf("no ordinary wakeups or switches: %+v", tot)
	}
	// The thread's function has returned: Load's totals are the same
	// counters. Its OS thread may still be switched out once more after
	// <-done, so compare a Load taken between two equal Totals.
	var st sched.ThreadState
	for i := 0; i < 1000; i++ {
		tot = o.Totals(slot)
		o.Load(slot, &st)
		if o.Totals(slot) == tot {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if st.Switches != tot.Switches || st.Wakeups != tot.Wakeups || st.Preemptions != tot.Preemptions ||
		time.Duration(st.RunTimeAt(sched.Nanotime())) != tot.RunTime && time.Duration(st.RunTime) != tot.RunTime {
		t.Fatalf("Load gave %+v, Totals %+v", st, tot)
	}
}

// schedstat reads /proc/TID/schedstat: time on a CPU, time waiting on a
// runqueue (ns).
func schedstat(t *testing.T, tid int) (run, wait time.Duration) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", os.Getpid(), tid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		t.Fatalf("schedstat %q", b)
	}
	r, _ := strconv.ParseInt(f[0], 10, 64)
	w, _ := strconv.ParseInt(f[1], 10, 64)
	return time.Duration(r), time.Duration(w)
}

func sub(a, b ThreadTotals) ThreadTotals {
	return ThreadTotals{
		State: a.State, WaitTime: a.WaitTime - b.WaitTime, RunTime: a.RunTime - b.RunTime,
		Switches: a.Switches - b.Switches, Preemptions: a.Preemptions - b.Preemptions,
		Wakeups: a.Wakeups - b.Wakeups, WakeupsOnCPU: a.WakeupsOnCPU - b.WakeupsOnCPU,
	}
}

// Two threads spinning on one CPU wait for it in turn: their wait and run
// times grow (and agree with the kernel's own schedstat accounting); a
// thread blocked throughout accumulates nothing.
func TestTotalsWaitBehindSpinner(t *testing.T) {
	o := newObserver(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))
	var stop atomic.Bool
	var x atomic.Uint64
	spin := func() {
		for !stop.Load() {
			for i := 0; i < 1000; i++ {
				x.Add(1)
			}
		}
	}
	var word uint32
	a, adone := pinned(t, 1, spin)
	b, bdone := pinned(t, 1, spin)
	c, cdone := pinned(t, 1, func() {
		for atomic.LoadUint32(&word) == 0 {
			futexWait(&word, 0)
		}
	})
	defer func() {
		stop.Store(true)
		atomic.StoreUint32(&word, 1)
		futexWake(&word)
		<-adone
		<-bdone
		<-cdone
	}()
	time.Sleep(20 * time.Millisecond) // c blocks
	var slots [3]int
	for i, tid := range []int{a, b, c} {
		s, err := o.Watch(tid)
		if err != nil {
			t.Fatal(err)
		}
		slots[i] = s
	}
	time.Sleep(50 * time.Millisecond)
	var t0 [3]ThreadTotals
	var r0, w0 [2]time.Duration
	for i := range slots {
		t0[i] = o.Totals(slots[i])
	}
	r0[0], w0[0] = schedstat(t, a)
	r0[1], w0[1] = schedstat(t, b)
	start := time.Now()
	time.Sleep(400 * time.Millisecond)
	var d [3]ThreadTotals
	for i := range slots {
		d[i] = sub(o.Totals(slots[i]), t0[i])
	}
	elapsed := time.Since(start)
	for i, tid := range []int{a, b} {
		r1, w1 := schedstat(t, tid)
		kr, kw := r1-r0[i], w1-w0[i]
		t.Logf("spinner %d: observer %+v; schedstat run %v wait %v", i, d[i], kr, kw)
		if d[i].WaitTime < elapsed/5 || d[i].RunTime < elapsed/10 {
			t.Errorf("spinner %d sharing a CPU waited %v and ran %v in %v: want ≥%v waiting, ≥%v running", i, d[i].WaitTime, d[i].RunTime, elapsed, elapsed/5, elapsed/10)
		}
		if sum := d[i].WaitTime + d[i].RunTime; sum > elapsed+20*time.Millisecond {
			t.Errorf("spinner %d: wait %v + run %v exceed the %v elapsed", i, d[i].WaitTime, d[i].RunTime, elapsed)
		}
		if d[i].Preemptions == 0 || d[i].Switches == 0 {
			t.Errorf("spinner %d: no preemptions or switches: %+v", i, d[i])
		}
		// The kernel's accounting and ours measure the same spells, up to
		// the one under way at each read.
		tol := elapsed/10 + 10*time.Millisecond
		if diff := d[i].WaitTime - kw; diff > tol || diff < -tol {
			t.Errorf("spinner %d: observer wait %v, schedstat %v: differ by more than %v", i, d[i].WaitTime, kw, tol)
		}
		if diff := d[i].RunTime - kr; diff > tol || diff < -tol {
			t.Errorf("spinner %d: observer run %v, schedstat %v: differ by more than %v", i, d[i].RunTime, kr, tol)
		}
	}
	t.Logf("blocked thread: %+v", d[2])
	if d[2].WaitTime != 0 || d[2].RunTime != 0 || d[2].Switches != 0 || d[2].Wakeups != 0 || d[2].State.State != sched.Sleeping {
		t.Errorf("a thread blocked throughout accumulated %+v", d[2])
	}
}
