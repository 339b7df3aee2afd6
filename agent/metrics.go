package agent

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/colibrivm/colibri/host"
)

// Metric names follow Prometheus' conventions and those of the libvirt
// exporter and KubeVirt where they overlap: base units (seconds, bytes),
// _total on counters, labels of bounded cardinality (VM, vCPU index, NIC
// index, reason).
var (
	mVMState = prometheus.NewDesc("colibri_vm_state", "1 for the state the VM is in, 0 for the others.", []string{"vm", "state"}, nil)
	mVMVCPUs = prometheus.NewDesc("colibri_vm_vcpus", "vCPUs the VM has.", []string{"vm"}, nil)
	mVMMem   = prometheus.NewDesc("colibri_vm_memory_bytes", "Guest memory the VM has.", []string{"vm"}, nil)
	mRestart = prometheus.NewDesc("colibri_vm_restarts_total", "Boots after the guest rebooted or crashed.", []string{"vm"}, nil)
	mPauses  = prometheus.NewDesc("colibri_vm_pauses_total", "Times the VM was paused (current run).", []string{"vm"}, nil)
	mUExits  = prometheus.NewDesc("colibri_vm_userspace_exits_total", "VM exits handled by colibri, by reason (current run).", []string{"vm", "reason"}, nil)
	mKExits  = prometheus.NewDesc("colibri_vm_kvm_exits_total", "VM exits KVM counted, by KVM's counter name (current run).", []string{"vm", "counter"}, nil)
	mVCPURun = prometheus.NewDesc("colibri_vcpu_time_seconds_total", "Time the vCPU's thread ran on a host CPU (eBPF observer).", []string{"vm", "vcpu"}, nil)
	mVCPUWt  = prometheus.NewDesc("colibri_vcpu_delay_seconds_total", "Time the vCPU's thread waited on a host runqueue for a CPU: CPU ready (eBPF observer).", []string{"vm", "vcpu"}, nil)
	mVCPUPre = prometheus.NewDesc("colibri_vcpu_preemptions_total", "Times the host took the vCPU's CPU away while it could run (eBPF observer).", []string{"vm", "vcpu"}, nil)
	mNICPkts = prometheus.NewDesc("colibri_nic_packets_total", "Frames a guest NIC sent (transmit) or was given (receive).", []string{"vm", "nic", "direction"}, nil)
	mNICByte = prometheus.NewDesc("colibri_nic_bytes_total", "Bytes a guest NIC sent (transmit) or was given (receive).", []string{"vm", "nic", "direction"}, nil)
	mNICDrop = prometheus.NewDesc("colibri_nic_drops_total", "Frames to or from a guest NIC the switch dropped, by cause.", []string{"vm", "nic", "cause"}, nil)
	mNICKick = prometheus.NewDesc("colibri_nic_kicks_total", "Transmit notifications from the guest's driver (current run).", []string{"vm", "nic"}, nil)
	mNICIrq  = prometheus.NewDesc("colibri_nic_interrupts_total", "Interrupts the NIC sent the guest (current run).", []string{"vm", "nic", "direction"}, nil)
	mPolls   = prometheus.NewDesc("colibri_poller_polls_total", "Passes of a datapath poller over its endpoints.", []string{"poller"}, nil)
	mFrames  = prometheus.NewDesc("colibri_poller_frames_total", "Frames a datapath poller switched.", []string{"poller"}, nil)
	mSleeps  = prometheus.NewDesc("colibri_poller_sleeps_total", "Times a datapath poller went to sleep.", []string{"poller"}, nil)
	mSlept   = prometheus.NewDesc("colibri_poller_sleep_seconds_total", "Time a datapath poller slept.", []string{"poller"}, nil)
	mPolicy  = prometheus.NewDesc("colibri_sched_policy", "1 for the scheduling policy in force.", []string{"policy"}, nil)
	mPasses  = prometheus.NewDesc("colibri_sched_passes_total", "Scheduling passes.", nil, nil)
	mParks   = prometheus.NewDesc("colibri_sched_preemptions_total", "vCPUs the scheduler parked (preempted).", nil, nil)
	mUnparks = prometheus.NewDesc("colibri_sched_unparks_total", "vCPUs the scheduler unparked.", nil, nil)
	mMigrate = prometheus.NewDesc("colibri_sched_migrations_total", "vCPUs the scheduler moved to another core.", nil, nil)
	mSErrors = prometheus.NewDesc("colibri_sched_errors_total", "Scheduler actions that failed.", nil, nil)
	mSCPU    = prometheus.NewDesc("colibri_sched_cpu_seconds_total", "CPU time of the scheduler's own thread.", nil, nil)
)

var vmStates = []host.State{host.StateCreated, host.StateRunning, host.StatePaused, host.StateStopping, host.StateStopped, host.StateFailed}

// hostCollector reads a host's counters at each scrape.
type hostCollector struct{ h *host.Host }

func (c hostCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mVMState, mVMVCPUs, mVMMem, mRestart, mPauses, mUExits, mKExits, mVCPURun, mVCPUWt, mVCPUPre,
		mNICPkts, mNICByte, mNICDrop, mNICKick, mNICIrq, mPolls, mFrames, mSleeps, mSlept, mPolicy, mPasses, mParks, mUnparks, mMigrate, mSErrors, mSCPU} {
		ch <- d
	}
}

func (c hostCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, v := range c.h.VMs() {
		info := v.Info()
		st := v.Stats()
		name := info.Name
		for _, s := range vmStates {
			g := 0.0
			if info.State == s {
				g = 1
			}
			gauge(mVMState, g, name, string(s))
		}
		gauge(mVMVCPUs, float64(info.Spec.CPUs), name)
		gauge(mVMMem, float64(info.Spec.Mem), name)
		counter(mRestart, float64(info.Restarts), name)
		counter(mPauses, float64(st.Pauses), name)
		for r, n := range st.UserExits {
			counter(mUExits, float64(n), name, r)
		}
		for k, n := range st.KVMExits {
			counter(mKExits, float64(n), name, k)
		}
		for _, vc := range info.VCPUs {
			id := strconv.Itoa(vc.ID)
			counter(mVCPURun, vc.RunTime.Seconds(), name, id)
			counter(mVCPUWt, vc.WaitTime.Seconds(), name, id)
			counter(mVCPUPre, float64(vc.Preemptions), name, id)
		}
		for i, n := range info.NICs {
			nic := strconv.Itoa(i)
			counter(mNICPkts, float64(n.PortStats.RxPackets), name, nic, "transmit")
			counter(mNICPkts, float64(n.PortStats.TxPackets), name, nic, "receive")
			counter(mNICByte, float64(n.PortStats.RxBytes), name, nic, "transmit")
			counter(mNICByte, float64(n.PortStats.TxBytes), name, nic, "receive")
			for cause, k := range dropsJSON(n.PortStats.Drops) {
				counter(mNICDrop, float64(k), name, nic, cause)
			}
			if d := n.Device; d != nil {
				counter(mNICKick, float64(d.Kicks), name, nic)
				counter(mNICIrq, float64(d.RxInterrupts), name, nic, "receive")
				counter(mNICIrq, float64(d.TxInterrupts), name, nic, "transmit")
			}
		}
	}
	hs := c.h.Stats()
	for _, p := range hs.Netstack.Pollers {
		id := strconv.Itoa(p.Index)
		counter(mPolls, float64(p.Polls), id)
		counter(mFrames, float64(p.Frames), id)
		counter(mSleeps, float64(p.Sleeps), id)
		counter(mSlept, float64(p.SleepNanos)/1e9, id)
	}
	if si := hs.Sched; si.Enabled {
		gauge(mPolicy, 1, strings.ToLower(si.Policy.Name))
		counter(mPasses, float64(si.Stats.Passes))
		counter(mParks, float64(si.Stats.Parks))
		counter(mUnparks, float64(si.Stats.Unparks))
		counter(mMigrate, float64(si.Stats.Migrations))
		counter(mSErrors, float64(si.Stats.Errors))
		counter(mSCPU, si.Stats.CPUTime.Seconds())
	}
}

// newMetrics returns the /metrics handler: the host's metrics and the
// agent process's own (Go runtime, process).
func newMetrics(h *host.Host) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(hostCollector{h}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
