package exp

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/colibrivm/colibri/sched"
	"github.com/colibrivm/colibri/sched/observer"
	"github.com/colibrivm/colibri/vmm"
)

// vcpuRef is one vCPU the runner watches with its own eBPF observer.
type vcpuRef struct {
	VM    string
	ID    int
	TID   int
	Class string
	slot  int
}

// Name returns "vm/vcpuN".
func (v vcpuRef) Name() string { return fmt.Sprintf("%s/%d", v.VM, v.ID) }

// vcpuSnap is one vCPU's counters at a moment.
type vcpuSnap struct {
	tot  observer.ThreadTotals
	hist observer.Hist
	// migrations is the kernel's se.nr_migrations of the thread (-1 if
	// /proc/TID/sched is not there).
	migrations int64
}

// hostSnap is the host's counters at a moment.
type hostSnap struct {
	at    time.Time
	vcpus []vcpuSnap
	sched sched.Stats
	vms   map[string]vmm.Stats
}

// threadMigrations reads se.nr_migrations of thread tid of this process.
func threadMigrations(tid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/sched", tid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.TrimSpace(k) == "se.nr_migrations" {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// snapVCPUs reads every watched vCPU's counters.
func snapVCPUs(obs *observer.Observer, refs []vcpuRef) []vcpuSnap {
	out := make([]vcpuSnap, len(refs))
	for i, r := range refs {
		out[i].tot = obs.Totals(r.slot)
		out[i].hist, _ = obs.SlotHist(r.slot)
		out[i].migrations = threadMigrations(r.TID)
	}
	return out
}

// Timeline is the sampled per-core timeline of one phase: at each sample,
// which watched vCPU was running on which host CPU.
type Timeline struct {
	// RateHz is the sampling rate asked for; the samples' own times are
	// in TS (seconds from the start of the phase's measured time).
	RateHz int `json:"rate_hz"`
	// VCPUs name the columns of CPU ("vm/id").
	VCPUs []string `json:"vcpus"`
	// Cores are the host CPUs the rows of the plot show.
	Cores []int     `json:"cores"`
	TS    []float64 `json:"ts"`
	// CPU[i][j] is the host CPU vCPU j ran on at sample i, -1 when it was
	// runnable and waiting for one, -2 when it was asleep.
	CPU [][]int16 `json:"cpu"`
}

// sampler samples the observer's thread states at a fixed rate.
type sampler struct {
	stop chan struct{}
	done chan struct{}
	tl   *Timeline
}

// startSampler samples refs' states every 1/rate s for at most span.
func startSampler(ctx context.Context, obs *observer.Observer, refs []vcpuRef, cores []int, rate int, span time.Duration) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{}),
		tl: &Timeline{RateHz: rate, Cores: cores}}
	for _, r := range refs {
		s.tl.VCPUs = append(s.tl.VCPUs, r.Name())
	}
	if rate <= 0 {
		close(s.done)
		return s
	}
	go func() {
		defer close(s.done)
		start := time.Now()
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		var st sched.ThreadState
		for {
			now := time.Now()
			el := now.Sub(start)
			if el > span {
				return
			}
			row := make([]int16, len(refs))
			for j, r := range refs {
				obs.Load(r.slot, &st)
				switch st.State {
				case sched.Running:
					row[j] = int16(st.CPU)
				case sched.Runnable:
					row[j] = -1
				default:
					row[j] = -2
				}
			}
			s.tl.TS = append(s.tl.TS, el.Seconds())
			s.tl.CPU = append(s.tl.CPU, row)
			select {
			case <-t.C:
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return s
}

// finish stops the sampler and returns its timeline.
func (s *sampler) finish() *Timeline {
	select {
	case <-s.done:
	default:
		close(s.stop)
	}
	<-s.done
	return s.tl
}
