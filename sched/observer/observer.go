package observer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/sched"
)

// Limits of the BPF maps (see bpf/observer.bpf.c).
const (
	// MaxSlots is the number of threads one observer can watch.
	MaxSlots = 1024
	// MaxCPUs is the highest CPU number + 1 the maps cover.
	MaxCPUs = 1024
	// Buckets is the number of log2 histogram buckets.
	Buckets = 32
)

// Options configure an observer.
type Options struct {
	// TraceAll counts every thread on the host in the per-CPU
	// histograms, not only watched ones and those of PIDs.
	TraceAll bool
	// ManagedCPUs are the CPUs whose foreign threads are counted.
	ManagedCPUs []int
}

// Observer is a loaded, attached eBPF observer; it implements
// [sched.Observer]. Its methods are safe for concurrent use.
type Observer struct {
	objs  observerObjects
	links []link.Link
	mem   []byte // the mmapped slots array

	mu   sync.Mutex
	free []int
	tids map[int]int // watched tid → slot
}

var _ sched.Observer = (*Observer)(nil)

// New loads and attaches the observer.
func New(opts Options) (_ *Observer, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("observer: loading eBPF programs needs root (CAP_BPF, CAP_PERFMON)")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("observer: raise RLIMIT_MEMLOCK: %w", err)
	}
	spec, err := loadObserver()
	if err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	if err := spec.Variables[observerVarTraceAll].Set(opts.TraceAll); err != nil {
		return nil, fmt.Errorf("observer: set trace_all: %w", err)
	}
	o := &Observer{tids: map[int]int{}}
	if err := spec.LoadAndAssign(&o.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("observer: BPF verifier rejected the programs: %+v", ve)
		}
		return nil, fmt.Errorf("observer: load BPF objects (needs a kernel with BTF and tp_btf): %w", err)
	}
	defer func() {
		if err != nil {
			o.Close()
		}
	}()
	size := MaxSlots * int(unsafe.Sizeof(observerSlotState{}))
	pg := os.Getpagesize()
	size = (size + pg - 1) / pg * pg
	o.mem, err = unix.Mmap(o.objs.Slots.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("observer: mmap the slots array: %w", err)
	}
	for _, p := range []*ebpf.Program{o.objs.SchedWakeup, o.objs.SchedWakeupNew, o.objs.SchedSwitch} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return nil, fmt.Errorf("observer: attach %s: %w", p, err)
		}
		o.links = append(o.links, l)
	}
	for s := MaxSlots - 1; s >= 0; s-- {
		o.free = append(o.free, s)
	}
	if err := o.SetManaged(opts.ManagedCPUs); err != nil {
		return nil, err
	}
	return o, nil
}

// Close detaches and unloads the observer.
func (o *Observer) Close() error {
	var errs []error
	for _, l := range o.links {
		errs = append(errs, l.Close())
	}
	o.links = nil
	if o.mem != nil {
		errs = append(errs, unix.Munmap(o.mem))
		o.mem = nil
	}
	errs = append(errs, o.objs.Close())
	return errors.Join(errs...)
}

// SetManaged sets the CPUs on which foreign threads are counted.
func (o *Observer) SetManaged(cpus []int) error {
	want := map[int]bool{}
	for _, c := range cpus {
		if c < 0 || c >= MaxCPUs {
			return fmt.Errorf("observer: CPU %d out of range", c)
		}
		want[c] = true
	}
	for c := 0; c < MaxCPUs; c++ {
		var v uint32
		if want[c] {
			v = 1
		}
		if err := o.objs.Managed.Update(uint32(c), v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("observer: mark CPU %d managed: %w", c, err)
		}
	}
	return nil
}

func (o *Observer) rec(slot int) *observerSlotState {
	return (*observerSlotState)(unsafe.Pointer(&o.mem[slot*int(unsafe.Sizeof(observerSlotState{}))]))
}

// Watch implements [sched.Observer]: it starts observing thread tid of
// any process. The state is seeded from /proc until the first event.
func (o *Observer) Watch(tid int) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if s, ok := o.tids[tid]; ok {
		return s, nil
	}
	if len(o.free) == 0 {
		return -1, fmt.Errorf("observer: all %d slots in use", MaxSlots)
	}
	slot := o.free[len(o.free)-1]
	rec := observerSlotState{Tid: uint32(tid), State: uint32(sched.Unknown), Cpu: -1}
	if st, cpu, err := procState(tid); err == nil {
		rec.State, rec.Cpu, rec.Since = uint32(st), int32(cpu), uint64(sched.Nanotime())
	} else {
		return -1, fmt.Errorf("observer: watch thread %d: %w", tid, err)
	}
	if err := o.objs.Slots.Update(uint32(slot), rec, ebpf.UpdateAny); err != nil {
		return -1, fmt.Errorf("observer: init slot %d: %w", slot, err)
	}
	if err := o.objs.SlotHist.Update(uint32(slot), observerHist{}, ebpf.UpdateAny); err != nil {
		return -1, fmt.Errorf("observer: clear histogram %d: %w", slot, err)
	}
	if err := o.objs.Watched.Update(uint32(tid), uint32(slot), ebpf.UpdateAny); err != nil {
		return -1, fmt.Errorf("observer: watch thread %d: %w", tid, err)
	}
	o.free = o.free[:len(o.free)-1]
	o.tids[tid] = slot
	return slot, nil
}

// Slot returns the slot of watched thread tid.
func (o *Observer) Slot(tid int) (int, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.tids[tid]
	return s, ok
}

// Unwatch implements [sched.Observer].
func (o *Observer) Unwatch(slot int) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for tid, s := range o.tids {
		if s != slot {
			continue
		}
		if err := o.objs.Watched.Delete(uint32(tid)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("observer: unwatch thread %d: %w", tid, err)
		}
		delete(o.tids, tid)
		o.free = append(o.free, slot)
		return nil
	}
	return fmt.Errorf("observer: slot %d is not in use", slot)
}

// WatchProcess watches every thread of process pid now, and counts the
// process's threads in the per-CPU histograms (also those it starts
// later). It returns the threads watched and their slots.
func (o *Observer) WatchProcess(pid int) (map[int]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, fmt.Errorf("observer: list threads of process %d: %w", pid, err)
	}
	if err := o.objs.Tgids.Update(uint32(pid), uint8(1), ebpf.UpdateAny); err != nil {
		return nil, fmt.Errorf("observer: count process %d: %w", pid, err)
	}
	out := map[int]int{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, err := o.Watch(tid)
		if err != nil {
			return out, err
		}
		out[tid] = s
	}
	return out, nil
}

// Load implements [sched.Observer]: a seqcount-checked read of the
// mmapped record with plain (atomic, on amd64 ordinary MOV) loads, state
// and totals (run and wait time up to the last state change, switches,
// wakeups, preemptions). On a torn read that persists, st is left
// unchanged.
func (o *Observer) Load(slot int, st *sched.ThreadState) {
	if slot < 0 || slot >= MaxSlots {
		return
	}
	r := o.rec(slot)
	for try := 0; try < 4; try++ {
		s1 := atomic.LoadUint32(&r.Seq)
		state := atomic.LoadUint32(&r.State)
		cpu := int32(atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.Cpu))))
		since := atomic.LoadUint64(&r.Since)
		run := atomic.LoadUint64(&r.RunNs)
		wait := atomic.LoadUint64(&r.WaitNs)
		sw := atomic.LoadUint64(&r.Switches)
		wk := atomic.LoadUint64(&r.Wakeups)
		pre := atomic.LoadUint64(&r.Preempts)
		if s1&1 == 0 && atomic.LoadUint32(&r.Seq) == s1 {
			*st = sched.ThreadState{State: sched.RunState(state), CPU: int(cpu), Since: int64(since),
				RunTime: int64(run), WaitTime: int64(wait), Switches: sw, Wakeups: wk, Preemptions: pre}
			return
		}
	}
}

// Switches returns how many times the thread in slot was switched in.
func (o *Observer) Switches(slot int) uint64 {
	if slot < 0 || slot >= MaxSlots {
		return 0
	}
	return atomic.LoadUint64(&o.rec(slot).Switches)
}

// ThreadTotals are a watched thread's cumulative scheduling counters since
// it was watched: what libvirt and KubeVirt export as vcpu_time and
// vcpu_delay ("CPU ready"). Times are in nanoseconds (time.Duration) of
// CLOCK_MONOTONIC, counts are events. They count what the observer saw
// from Watch on; like /proc/TID/schedstat, not the thread's whole life.
type ThreadTotals struct {
	// State is the thread's current state and since when it is in it.
	State sched.ThreadState
	// WaitTime is the time the thread spent runnable on a runqueue
	// before being switched in: woken and waiting, or preempted and
	// waiting to run again. A current wait is included up to the read.
	WaitTime time.Duration
	// RunTime is the time the thread spent on a CPU. A current run is
	// included up to the read.
	RunTime time.Duration
	// Switches counts the times it was switched in.
	Switches uint64
	// Preemptions counts involuntary switches out: the thread left its
	// CPU still runnable (preempted, or it yielded), as the kernel's
	// nonvoluntary_ctxt_switches counts them.
	Preemptions uint64
	// Wakeups counts the wakeups that made the sleeping thread runnable.
	Wakeups uint64
	// WakeupsOnCPU counts wakeups the kernel reported while the thread
	// was still on its CPU (it had not blocked yet); they change nothing.
	WakeupsOnCPU uint64
}

// Totals returns the cumulative counters of the thread in slot; the zero
// ThreadTotals for a slot out of range. It reads the mmapped record with
// plain loads (no system call, no allocation) and retries while a BPF
// program is writing it; it is safe for concurrent use, also with Load.
// A slot reused by a later Watch starts from zero again.
func (o *Observer) Totals(slot int) ThreadTotals {
	var t ThreadTotals
	if slot < 0 || slot >= MaxSlots {
		return t
	}
	r := o.rec(slot)
	for try := 0; try < 16; try++ {
		s1 := atomic.LoadUint32(&r.Seq)
		state := atomic.LoadUint32(&r.State)
		cpu := int32(atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.Cpu))))
		since := atomic.LoadUint64(&r.Since)
		t = ThreadTotals{
			State:        sched.ThreadState{State: sched.RunState(state), CPU: int(cpu), Since: int64(since)},
			WaitTime:     time.Duration(atomic.LoadUint64(&r.WaitNs)),
			RunTime:      time.Duration(atomic.LoadUint64(&r.RunNs)),
			Switches:     atomic.LoadUint64(&r.Switches),
			Preemptions:  atomic.LoadUint64(&r.Preempts),
			Wakeups:      atomic.LoadUint64(&r.Wakeups),
			WakeupsOnCPU: atomic.LoadUint64(&r.WakeupsOnCpu),
		}
		if s1&1 == 0 && atomic.LoadUint32(&r.Seq) == s1 {
			break
		}
	}
	if d := time.Duration(sched.Nanotime() - t.State.Since); d > 0 && t.State.Since > 0 {
		switch t.State.State {
		case sched.Running:
			t.RunTime += d
		case sched.Runnable:
			t.WaitTime += d
		}
	}
	return t
}

// SlotHist returns the runqueue-latency histogram of the thread in slot.
func (o *Observer) SlotHist(slot int) (Hist, error) {
	var h observerHist
	if err := o.objs.SlotHist.Lookup(uint32(slot), &h); err != nil {
		return Hist{}, fmt.Errorf("observer: read histogram of slot %d: %w", slot, err)
	}
	return Hist(h.Slots), nil
}

// CPUHist returns the runqueue-latency histogram of CPU cpu (watched
// threads, threads of watched processes, or all with TraceAll).
func (o *Observer) CPUHist(cpu int) (Hist, error) {
	var h observerHist
	if err := o.objs.CpuHist.Lookup(uint32(cpu), &h); err != nil {
		return Hist{}, fmt.Errorf("observer: read histogram of CPU %d: %w", cpu, err)
	}
	return Hist(h.Slots), nil
}

// Foreign returns how many times an unwatched thread was switched in on
// cpu while it was managed.
func (o *Observer) Foreign(cpu int) (uint64, error) {
	var n uint64
	if err := o.objs.Foreign.Lookup(uint32(cpu), &n); err != nil {
		return 0, fmt.Errorf("observer: read foreign count of CPU %d: %w", cpu, err)
	}
	return n, nil
}

// procState reads a thread's state and last CPU from /proc.
func procState(tid int) (sched.RunState, int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", tid))
	if err != nil {
		return sched.Unknown, -1, fmt.Errorf("read thread state: %w", err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return sched.Unknown, -1, fmt.Errorf("parse /proc/%d/stat", tid)
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 37 {
		return sched.Unknown, -1, fmt.Errorf("parse /proc/%d/stat: %d fields", tid, len(f))
	}
	cpu, _ := strconv.Atoi(f[36])
	st := sched.Sleeping
	if f[0] == "R" {
		st = sched.Running
	}
	return st, cpu, nil
}
