package agent

import (
	"bytes"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/internal/promtext"
)

var vmStates = []host.State{host.StateCreated, host.StateRunning, host.StatePaused, host.StateStopping, host.StateStopped, host.StateFailed}

// scrape holds one scrape's metric families. Names follow Prometheus'
// conventions and those of the libvirt exporter and KubeVirt where they
// overlap: base units (seconds, bytes), _total on counters, labels of
// bounded cardinality (VM, vCPU index, NIC index, reason).
type scrape struct {
	vmState, vmVCPUs, vmMem, restarts, pauses, userExits, kvmExits       *promtext.Family
	vcpuRun, vcpuWait, vcpuPreempt                                       *promtext.Family
	nicPackets, nicBytes, nicDrops, nicKicks, nicIrqs                    *promtext.Family
	polls, frames, sleeps, slept                                         *promtext.Family
	policy, passes, parks, unparks, migrations, schedErrors, schedCPU    *promtext.Family
	rss, vsize, cpuSeconds, openFDs, maxFDs, startTime, threads, gorouts *promtext.Family
}

func newScrape() *scrape {
	c, g := promtext.Counter, promtext.Gauge
	f := promtext.NewFamily
	return &scrape{
		vmState:     f("colibri_vm_state", "1 for the state the VM is in, 0 for the others.", g, "vm", "state"),
		vmVCPUs:     f("colibri_vm_vcpus", "vCPUs the VM has.", g, "vm"),
		vmMem:       f("colibri_vm_memory_bytes", "Guest memory the VM has.", g, "vm"),
		restarts:    f("colibri_vm_restarts_total", "Boots after the guest rebooted or crashed.", c, "vm"),
		pauses:      f("colibri_vm_pauses_total", "Times the VM was paused (current run).", c, "vm"),
		userExits:   f("colibri_vm_userspace_exits_total", "VM exits handled by colibri, by reason (current run).", c, "vm", "reason"),
		kvmExits:    f("colibri_vm_kvm_exits_total", "VM exits KVM counted, by KVM's counter name (current run).", c, "vm", "counter"),
		vcpuRun:     f("colibri_vcpu_time_seconds_total", "Time the vCPU's thread ran on a host CPU (eBPF observer).", c, "vm", "vcpu"),
		vcpuWait:    f("colibri_vcpu_delay_seconds_total", "Time the vCPU's thread waited on a host runqueue for a CPU: CPU ready (eBPF observer).", c, "vm", "vcpu"),
		vcpuPreempt: f("colibri_vcpu_preemptions_total", "Times the host took the vCPU's CPU away while it could run (eBPF observer).", c, "vm", "vcpu"),
		nicPackets:  f("colibri_nic_packets_total", "Frames a guest NIC sent (transmit) or was given (receive).", c, "vm", "nic", "direction"),
		nicBytes:    f("colibri_nic_bytes_total", "Bytes a guest NIC sent (transmit) or was given (receive).", c, "vm", "nic", "direction"),
		nicDrops:    f("colibri_nic_drops_total", "Frames to or from a guest NIC the switch dropped, by cause.", c, "vm", "nic", "cause"),
		nicKicks:    f("colibri_nic_kicks_total", "Transmit notifications from the guest's driver (current run).", c, "vm", "nic"),
		nicIrqs:     f("colibri_nic_interrupts_total", "Interrupts the NIC sent the guest (current run).", c, "vm", "nic", "direction"),
		polls:       f("colibri_poller_polls_total", "Passes of a datapath poller over its endpoints.", c, "poller"),
		frames:      f("colibri_poller_frames_total", "Frames a datapath poller switched.", c, "poller"),
		sleeps:      f("colibri_poller_sleeps_total", "Times a datapath poller went to sleep.", c, "poller"),
		slept:       f("colibri_poller_sleep_seconds_total", "Time a datapath poller slept.", c, "poller"),
		policy:      f("colibri_sched_policy", "1 for the scheduling policy in force.", g, "policy"),
		passes:      f("colibri_sched_passes_total", "Scheduling passes.", c),
		parks:       f("colibri_sched_preemptions_total", "vCPUs the scheduler parked (preempted).", c),
		unparks:     f("colibri_sched_unparks_total", "vCPUs the scheduler unparked.", c),
		migrations:  f("colibri_sched_migrations_total", "vCPUs the scheduler moved to another core.", c),
		schedErrors: f("colibri_sched_errors_total", "Scheduler actions that failed.", c),
		schedCPU:    f("colibri_sched_cpu_seconds_total", "CPU time of the scheduler's own thread.", c),
		rss:         f("process_resident_memory_bytes", "Resident memory of the agent process, guest memory included.", g),
		vsize:       f("process_virtual_memory_bytes", "Virtual memory of the agent process.", g),
		cpuSeconds:  f("process_cpu_seconds_total", "User and system CPU time of the agent process.", c),
		openFDs:     f("process_open_fds", "Open file descriptors of the agent process.", g),
		maxFDs:      f("process_max_fds", "The agent process's limit on open file descriptors.", g),
		startTime:   f("process_start_time_seconds", "When the agent process started, in seconds since the Unix epoch.", g),
		threads:     f("process_threads", "OS threads of the agent process.", g),
		gorouts:     f("go_goroutines", "Goroutines of the agent process.", g),
	}
}

// families lists the scrape's families in the order they are written.
func (s *scrape) families() []*promtext.Family {
	return []*promtext.Family{s.vmState, s.vmVCPUs, s.vmMem, s.restarts, s.pauses, s.userExits, s.kvmExits,
		s.vcpuRun, s.vcpuWait, s.vcpuPreempt, s.nicPackets, s.nicBytes, s.nicDrops, s.nicKicks, s.nicIrqs,
		s.polls, s.frames, s.sleeps, s.slept, s.policy, s.passes, s.parks, s.unparks, s.migrations, s.schedErrors, s.schedCPU,
		s.rss, s.vsize, s.cpuSeconds, s.openFDs, s.maxFDs, s.startTime, s.threads, s.gorouts}
}

// collectHost reads the host's counters.
func (s *scrape) collectHost(h *host.Host) {
	for _, v := range h.VMs() {
		info := v.Info()
		st := v.Stats()
		name := info.Name
		for _, state := range vmStates {
			g := 0.0
			if info.State == state {
				g = 1
			}
			s.vmState.Add(g, name, string(state))
		}
		s.vmVCPUs.Add(float64(info.Spec.CPUs), name)
		s.vmMem.Add(float64(info.Spec.Mem), name)
		s.restarts.Add(float64(info.Restarts), name)
		s.pauses.Add(float64(st.Pauses), name)
		for _, r := range sortedKeys(st.UserExits) {
			s.userExits.Add(float64(st.UserExits[r]), name, r)
		}
		for _, k := range sortedKeys(st.KVMExits) {
			s.kvmExits.Add(float64(st.KVMExits[k]), name, k)
		}
		for _, vc := range info.VCPUs {
			id := strconv.Itoa(vc.ID)
			s.vcpuRun.Add(vc.RunTime.Seconds(), name, id)
			s.vcpuWait.Add(vc.WaitTime.Seconds(), name, id)
			s.vcpuPreempt.Add(float64(vc.Preemptions), name, id)
		}
		for i, n := range info.NICs {
			nic := strconv.Itoa(i)
			s.nicPackets.Add(float64(n.PortStats.RxPackets), name, nic, "transmit")
			s.nicPackets.Add(float64(n.PortStats.TxPackets), name, nic, "receive")
			s.nicBytes.Add(float64(n.PortStats.RxBytes), name, nic, "transmit")
			s.nicBytes.Add(float64(n.PortStats.TxBytes), name, nic, "receive")
			drops := dropsJSON(n.PortStats.Drops)
			for _, cause := range sortedKeys(drops) {
				s.nicDrops.Add(float64(drops[cause]), name, nic, cause)
			}
			if d := n.Device; d != nil {
				s.nicKicks.Add(float64(d.Kicks), name, nic)
				s.nicIrqs.Add(float64(d.RxInterrupts), name, nic, "receive")
				s.nicIrqs.Add(float64(d.TxInterrupts), name, nic, "transmit")
			}
		}
	}
	hs := h.Stats()
	for _, p := range hs.Netstack.Pollers {
		id := strconv.Itoa(p.Index)
		s.polls.Add(float64(p.Polls), id)
		s.frames.Add(float64(p.Frames), id)
		s.sleeps.Add(float64(p.Sleeps), id)
		s.slept.Add(float64(p.SleepNanos)/1e9, id)
	}
	if si := hs.Sched; si.Enabled {
		s.policy.Add(1, strings.ToLower(si.Policy.Name))
		s.passes.Add(float64(si.Stats.Passes))
		s.parks.Add(float64(si.Stats.Parks))
		s.unparks.Add(float64(si.Stats.Unparks))
		s.migrations.Add(float64(si.Stats.Migrations))
		s.schedErrors.Add(float64(si.Stats.Errors))
		s.schedCPU.Add(si.Stats.CPUTime.Seconds())
	}
}

// collectProcess reads the agent process's own figures from the kernel.
// A figure the kernel does not give is left out rather than reported as 0.
func (s *scrape) collectProcess() {
	pageSize := float64(os.Getpagesize())
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 2 {
			if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
				s.vsize.Add(float64(n) * pageSize)
			}
			if n, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				s.rss.Add(float64(n) * pageSize)
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.cpuSeconds.Add(float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9)
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		s.openFDs.Add(float64(len(fds) - 1)) // the directory's own descriptor
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		s.maxFDs.Add(float64(rl.Cur))
	}
	if start, threads, ok := procStat(); ok {
		s.startTime.Add(start)
		s.threads.Add(threads)
	}
	s.gorouts.Add(float64(runtime.NumGoroutine()))
}

// clockTicks is the kernel's USER_HZ, the unit of /proc's process times:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// procStat returns the process's start time (seconds since the epoch) and
// thread count from /proc/self/stat and the boot time in /proc/stat.
func procStat() (start, threads float64, ok bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// fields are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3, the state
	if len(f) < 20 {
		return 0, 0, false
	}
	nthreads, err1 := strconv.ParseUint(f[17], 10, 64)   // field 20
	startTicks, err2 := strconv.ParseUint(f[19], 10, 64) // field 22
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	st, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, found := strings.CutPrefix(line, "btime "); found {
			btime, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, 0, false
			}
			return float64(btime) + float64(startTicks)/clockTicks, float64(nthreads), true
		}
	}
	return 0, 0, false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// metricsHandler serves /metrics: the host's counters and the agent
// process's own, read at each scrape.
type metricsHandler struct{ h *host.Host }

func newMetrics(h *host.Host) http.Handler { return metricsHandler{h} }

func (m metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := newScrape()
	s.collectHost(m.h)
	s.collectProcess()
	var buf bytes.Buffer
	if err := promtext.Write(&buf, s.families()...); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", promtext.ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Write(buf.Bytes())
}
