package osthread

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestNeverMainThreadAndThreadsEnd runs many short locked functions, the
// way vCPU and poller threads start and end, and checks that none ran on
// the main thread and that every one's thread is gone after.
func TestNeverMainThreadAndThreadsEnd(t *testing.T) {
	// Without osthread, the runtime schedules some of these goroutines on
	// the main thread; here the main goroutine keeps itself busy elsewhere
	// by blocking, which frees the main thread for them.
	const n = 200
	tids := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		Go(func() {
			defer wg.Done()
			tids[i] = unix.Gettid()
			runtime.Gosched()
		})
		if i%20 == 0 {
			wg.Wait()
		}
	}
	wg.Wait()
	pid := os.Getpid()
	for i, tid := range tids {
		if tid == pid {
			t.Fatalf("function %d ran on the main thread", i)
		}
	}
	for _, tid := range tids {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("thread %d still alive 5s after its function returned", tid)
			}
		}
	}
}

// The main goroutine starts on the main thread; locking it there in init
// lets TestMain call run from the main thread itself, the case osthread
// exists for.
func init() { runtime.LockOSThread() }

var fromMain struct {
	onMain bool // TestMain ran on the main thread
	fnTID  int  // where fn ran
}

func TestMain(m *testing.M) {
	fromMain.onMain = unix.Gettid() == os.Getpid()
	got := make(chan int, 1)
	run(func() { got <- unix.Gettid() })
	fromMain.fnTID = <-got
	runtime.UnlockOSThread()
	os.Exit(m.Run())
}

// TestMainThreadHandedOver: fn started from the main thread runs on
// another one, and the main thread is free after.
func TestMainThreadHandedOver(t *testing.T) {
	if !fromMain.onMain {
		t.Fatal("TestMain did not run on the main thread: the test cannot check the case it is for")
	}
	if fromMain.fnTID == os.Getpid() || fromMain.fnTID == 0 {
		t.Fatalf("fn ran on thread %d, the main thread is %d", fromMain.fnTID, os.Getpid())
	}
}

// TestSetNameNamesOnlyThatThread: the name shows in the thread's comm,
// the process's own comm keeps its name, and the thread ends with fn.
func TestSetNameNamesOnlyThatThread(t *testing.T) {
	proc, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	type named struct {
		tid  int
		comm string
		err  error
	}
	c := make(chan named)
	release := make(chan struct{})
	Go(func() {
		SetName("colibri-test-thread") // longer than the kernel keeps
		tid := unix.Gettid()
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/comm", tid))
		c <- named{tid, string(b), err}
		<-release
	})
	n := <-c
	close(release)
	if n.err != nil {
		t.Fatal(n.err)
	}
	if n.comm != "colibri-test-th\n" {
		t.Errorf("thread comm %q, want the first 15 bytes of the name", n.comm)
	}
	if after, _ := os.ReadFile("/proc/self/comm"); string(after) != string(proc) {
		t.Errorf("process comm changed from %q to %q", proc, after)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", n.tid)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("named thread %d still exists after its function returned", n.tid)
		}
		time.Sleep(time.Millisecond)
	}
}
