package vmm

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/colibrivm/colibri/internal/smaps"
	"github.com/colibrivm/colibri/kvm"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/blk"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"
)

// Stats is what a VM measured about its own run.
type Stats struct {
	// FirstOutput is the wall time from Run to the guest's first console byte.
	FirstOutput time.Duration
	// GuestInit is the wall time from Run to the boot-timer write of the
	// guest's init (0 if it never came).
	GuestInit time.Duration
	// Exit is the wall time from Run to the end of the VM.
	Exit time.Duration
	// UserExits counts exits to userspace by reason, over all vCPUs.
	UserExits map[string]uint64
	// KVMExits are KVM's own per-vCPU counters summed over vCPUs
	// ("exits", "io_exits", "mmio_exits", "halt_exits", ...): they include
	// the exits the kernel handled without coming to userspace.
	KVMExits map[string]uint64
	// Kicks and Parks count scheduler interventions.
	Kicks, Parks uint64
	// KickSignals counts the signals kicks sent: at most one is in
	// flight per vCPU, so a kick while one is unanswered sends none.
	KickSignals uint64
	// Pauses counts the times the VM was paused; ClockCtrls the vCPUs
	// that then told the guest's kvmclock they had been stopped.
	Pauses, ClockCtrls uint64
	// UnhandledPIO and UnhandledMMIO count accesses no device claimed.
	UnhandledPIO, UnhandledMMIO uint64
	// TopPorts are the most accessed I/O ports ("0x3f8": count).
	TopPorts []string
	// NICs are the virtio-net devices' counters, in NIC order.
	NICs []netdev.StatsSnapshot
	// Devices are every virtio device's counters, in PCI slot order.
	Devices []DeviceStats
}

// DeviceStats are one virtio device's counters.
type DeviceStats struct {
	// Kind is "virtio-net", "virtio-blk", "virtio-rng" (or "virtio-N"
	// for another device type N).
	Kind string `json:"kind"`
	// Transport counts what the driver did to the virtio-pci transport:
	// activations, resets, refused writes, the times the device marked
	// itself as needing a reset.
	Transport virtio.TransportStats `json:"transport"`
	// Errors counts the requests the device refused or failed:
	// virtio-blk's failed requests, virtio-net's malformed transmit
	// chains and control commands answered with an error.
	Errors uint64 `json:"errors"`
}

// deviceStats reads the counters of one virtio transport and its device.
func deviceStats(p *virtio.PCI) DeviceStats {
	d := DeviceStats{Transport: p.Stats()}
	switch dev := p.Device().(type) {
	case *netdev.Net:
		d.Kind = "virtio-net"
		d.Errors = dev.Stats.TxMalformed.Load() + dev.Stats.CtrlErrors.Load()
	case *blk.Blk:
		d.Kind = "virtio-blk"
		d.Errors = dev.Stats.Errors.Load()
	default:
		switch t := p.DeviceType(); t {
		case virtio.TypeRNG:
			d.Kind = "virtio-rng"
		default:
			d.Kind = fmt.Sprintf("virtio-%d", t)
		}
	}
	return d
}

// Stats returns the run's measurements so far; it may be called at any
// time, also while the VM runs.
func (v *VM) Stats() Stats {
	s := Stats{
		FirstOutput:   v.console.elapsed(),
		GuestInit:     v.timer.elapsed(),
		Exit:          time.Duration(v.exitAt.Load()),
		UserExits:     map[string]uint64{},
		KVMExits:      map[string]uint64{},
		UnhandledPIO:  v.pio.unhandled.Load(),
		UnhandledMMIO: v.mmioUnhandled.Load(),
	}
	for _, pc := range v.pio.top(6) {
		s.TopPorts = append(s.TopPorts, fmt.Sprintf("%#x %d", pc.port, pc.count))
	}
	for _, c := range v.VCPUs() {
		for r, n := range c.Exits() {
			s.UserExits[r.String()] += n
		}
		for k, n := range c.KVMStats() {
			s.KVMExits[k] += n
		}
		s.Kicks += c.kicks.Load()
		s.KickSignals += c.signals.Load()
		s.Parks += c.parks.Load()
		s.ClockCtrls += c.clockCtrls.Load()
	}
	for _, n := range v.nics {
		s.NICs = append(s.NICs, n.Snapshot())
	}
	for _, p := range v.virtio {
		s.Devices = append(s.Devices, deviceStats(p))
	}
	s.Pauses = v.pauses.Load()
	return s
}

// SampleRIPs asks every running vCPU for its instruction pointer, which
// its thread reads at the exit the request causes, and waits up to
// timeout for the answers: where a guest that has stopped making
// progress is spinning. A vCPU that did not answer in time (parked,
// paused, ended) has 0. Each request costs the guest one exit, through a
// Kick (counted in Stats.Kicks).
func (v *VM) SampleRIPs(timeout time.Duration) []uint64 {
	cpus := v.VCPUs()
	want := make([]uint64, len(cpus))
	for i, c := range cpus {
		want[i] = c.sampleWant.Add(1)
		_ = c.Kick()
	}
	deadline := time.Now().Add(timeout)
	out := make([]uint64, len(cpus))
	for i, c := range cpus {
		for c.ripFor.Load() < want[i] && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if c.ripFor.Load() >= want[i] {
			out[i] = c.rip.Load()
		}
	}
	return out
}

// kvmExitCounters are the KVM binary-stats counters worth reporting.
var kvmExitCounters = []string{
	"exits", "io_exits", "mmio_exits", "halt_exits", "irq_exits", "signal_exits",
	"irq_window_exits", "nmi_window_exits", "request_irq_exits", "insn_emulation",
	"hypercalls", "irq_injections", "halt_wakeup", "l1d_flush", "host_state_reload",
	"fpu_reload", "directed_yield_successful",
}

// pickKVMCounters reads st and keeps the counters worth reporting.
func pickKVMCounters(st *kvm.Stats) map[string]uint64 {
	all, err := st.Read()
	if err != nil {
		return nil
	}
	out := map[string]uint64{}
	for _, k := range kvmExitCounters {
		if n, ok := all[k]; ok {
			out[k] = n
		}
	}
	return out
}

// Format writes the stats as an aligned human-readable block.
func (s Stats) Format() string {
	var b strings.Builder
	fmt.Fprintf(&b, "time to first guest output: %v\n", s.FirstOutput.Round(time.Millisecond))
	if s.GuestInit > 0 {
		fmt.Fprintf(&b, "time to guest init:         %v\n", s.GuestInit.Round(time.Millisecond))
	} else {
		fmt.Fprintf(&b, "time to guest init:         (the guest never wrote the boot timer)\n")
	}
	fmt.Fprintf(&b, "time to exit:               %v\n", s.Exit.Round(time.Millisecond))
	fmt.Fprintf(&b, "exits to userspace:         %s\n", formatCounts(s.UserExits))
	if len(s.KVMExits) > 0 {
		fmt.Fprintf(&b, "KVM exit counters:          %s\n", formatCounts(s.KVMExits))
	}
	if len(s.TopPorts) > 0 {
		fmt.Fprintf(&b, "busiest I/O ports:          %s\n", strings.Join(s.TopPorts, ", "))
	}
	if s.UnhandledPIO+s.UnhandledMMIO > 0 {
		fmt.Fprintf(&b, "unclaimed accesses:         pio %d, mmio %d\n", s.UnhandledPIO, s.UnhandledMMIO)
	}
	for i, n := range s.NICs {
		fmt.Fprintf(&b, "eth%d (%s):         kicks %d, rx interrupts %d, tx interrupts %d, malformed tx %d, rx too big %d, control errors %d\n",
			i, n.MAC, n.Kicks, n.RxInterrupts, n.TxInterrupts, n.TxMalformed, n.RxTooBig, n.CtrlErrors)
	}
	for _, d := range s.Devices {
		t := d.Transport
		if t.RefusedWrites+t.RefusedFeatures+t.NeedsReset+t.FailedActivations+d.Errors == 0 {
			continue // a well-behaved driver: nothing worth a line
		}
		fmt.Fprintf(&b, "%-27s %d activations (%d failed), %d resets, %d refused writes, %d refused features, needs reset %d times, %d request errors\n",
			d.Kind+":", t.Activations, t.FailedActivations, t.Resets, t.RefusedWrites, t.RefusedFeatures, t.NeedsReset, d.Errors)
	}
	return b.String()
}

func formatCounts(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	var total uint64
	for k, n := range m {
		keys = append(keys, k)
		total += n
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if _, ok := m["exits"]; !ok {
		return fmt.Sprintf("total %d: %s", total, strings.Join(parts, ", "))
	}
	return strings.Join(parts, ", ")
}

// Overhead is the resident memory of this process that is not guest RAM.
type Overhead struct {
	// Anon is anonymous memory: the Go heap, stacks, runtime structures.
	Anon uint64
	// File is file-backed memory: the colibri binary's pages and any
	// mapped file.
	File uint64
	// Threads is the process's number of OS threads (each has stacks in
	// Anon).
	Threads int
}

// Total is Anon + File.
func (o Overhead) Total() uint64 { return o.Anon + o.File }

// VMMOverheadRSS sums Rss over every mapping in /proc/self/smaps except
// the guest memory's memfd (Firecracker's "VMM memory" measure), split into
// anonymous and file-backed memory.
func VMMOverheadRSS() (Overhead, error) { return OverheadRSSOf(0) }

// OverheadRSSOf is VMMOverheadRSS of process pid (0: this one).
func OverheadRSSOf(pid int) (Overhead, error) {
	var o Overhead
	ms, err := smaps.Read(pid)
	if err != nil {
		return o, err
	}
	o.Threads = smaps.Threads(pid)
	for _, m := range ms {
		switch {
		case strings.Contains(m.Path, smaps.GuestMemoryName):
		case m.FileBacked():
			o.File += m.Rss
		default:
			o.Anon += m.Rss
		}
	}
	return o, nil
}
