package host

import (
	"time"

	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/vmm"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"
)

// VMInfo describes a VM as it is now.
type VMInfo struct {
	Name  string
	State State
	// Spec is the VM's spec with its defaults filled in.
	Spec spec.VM
	// Created and Started are when the VM was created and last started
	// (zero if never).
	Created, Started time.Time
	// Restarts counts the boots after a guest reboot or crash.
	Restarts int
	// Exit is how its last run ended (nil while it runs or before).
	Exit *Exit
	// VCPUs are its vCPUs while they run.
	VCPUs []VCPUInfo
	// NICs are its NICs, in order.
	NICs []NICInfo
	// Disks are its disks, in order.
	Disks []spec.Disk
	// ConsoleBytes is how much console output the guest has written.
	ConsoleBytes int64
	// ConsoleLost is how much of it the console's file or terminal never
	// got because it fell behind the guest.
	ConsoleLost int64
}

// VCPUInfo describes one vCPU.
type VCPUInfo struct {
	// ID is the vCPU's index (its APIC id); TID its host thread id.
	ID, TID int
	// Running is true while its thread is in guest mode (or entering).
	Running bool
	// RunTime and WaitTime are the thread's time on a host CPU and on a
	// host runqueue waiting for one ("CPU ready"), summed over the VM's
	// runs, from the eBPF observer (zero without it).
	RunTime, WaitTime time.Duration
	// Preemptions counts the times the host took its CPU away while it
	// could run.
	Preemptions uint64
}

// NICInfo describes one NIC.
type NICInfo struct {
	// MAC and Switch are as the spec says; Port is its switch port.
	MAC, Switch, Port string
	// Paused is true while the VM is paused (its port cut off).
	Paused bool
	// Port is the switch port's counters ("rx" is what the guest sent).
	PortStats netstack.PortStats
	// Device is the virtio-net device's counters (nil when the VM is not
	// running).
	Device *netdev.StatsSnapshot
}

// Info returns the VM's description.
func (v *VM) Info() VMInfo {
	v.mu.Lock()
	info := VMInfo{Name: v.name, State: v.state, Spec: v.spec, Created: v.created, Started: v.startedAt,
		Restarts: v.restarts, Disks: v.spec.Disks}
	if v.exit != nil {
		e := *v.exit
		info.Exit = &e
	}
	cur := v.cur
	ports := v.ports
	past := make(map[int]pastTotals, len(v.past))
	for id, t := range v.past {
		past[id] = t
	}
	v.mu.Unlock()
	info.ConsoleBytes, info.ConsoleLost = v.console.Written(), v.console.Lost()
	var st vmm.Stats
	if cur != nil {
		st = cur.Stats()
		for _, c := range cur.VCPUs() {
			vi := VCPUInfo{ID: c.ID(), TID: c.TID(), Running: c.Running()}
			if t, ok := v.h.totals(c.TID()); ok {
				vi.RunTime, vi.WaitTime, vi.Preemptions = t.RunTime, t.WaitTime, t.Preemptions
			}
			info.VCPUs = append(info.VCPUs, vi)
		}
	}
	for i := range info.VCPUs {
		if p, ok := past[info.VCPUs[i].ID]; ok {
			info.VCPUs[i].RunTime += p.RunTime
			info.VCPUs[i].WaitTime += p.WaitTime
			info.VCPUs[i].Preemptions += p.Preemptions
		}
	}
	for i, n := range v.spec.NICs {
		ni := NICInfo{MAC: n.MAC.String(), Switch: n.Switch}
		if i < len(ports) {
			p := ports[i]
			ni.Port = p.port.Name()
			ni.PortStats = p.port.Stats()
			ni.Paused = p.isPaused()
		}
		if i < len(st.NICs) {
			d := st.NICs[i]
			ni.Device = &d
		}
		info.NICs = append(info.NICs, ni)
	}
	return info
}

// Stats returns the VM's counters: those of the run under way, or of the
// last one once it has ended.
func (v *VM) Stats() vmm.Stats {
	v.mu.Lock()
	cur, last := v.cur, v.last
	v.mu.Unlock()
	if cur != nil {
		return cur.Stats()
	}
	return last
}

// SampleRIPs returns the instruction pointer of each vCPU of the VM's
// current run (vmm.VM.SampleRIPs), or nil when it is not running.
func (v *VM) SampleRIPs(timeout time.Duration) []uint64 {
	v.mu.Lock()
	cur := v.cur
	v.mu.Unlock()
	if cur == nil {
		return nil
	}
	return cur.SampleRIPs(timeout)
}

// HostStats are the host's counters.
type HostStats struct {
	// VMs are each VM's counters, in creation order.
	VMs []VMStats
	// Netstack is the datapath's: pollers, switches, ports.
	Netstack netstack.Stats
	// Sched is the scheduler's (Enabled false without one).
	Sched SchedInfo
	// Uplinks are the AF_XDP uplinks' counters by interface.
	Uplinks map[string]any
}

// VMStats are one VM's counters.
type VMStats struct {
	Name  string
	State State
	Exit  *Exit
	Stats vmm.Stats
}

// Stats returns the host's counters.
func (h *Host) Stats() HostStats {
	st := HostStats{Netstack: h.net.stack.Stats(), Sched: h.SchedInfo()}
	for _, v := range h.VMs() {
		v.mu.Lock()
		vs := VMStats{Name: v.name, State: v.state}
		if v.exit != nil {
			e := *v.exit
			vs.Exit = &e
		}
		v.mu.Unlock()
		vs.Stats = v.Stats()
		st.VMs = append(st.VMs, vs)
	}
	if len(h.net.xdps) > 0 {
		st.Uplinks = map[string]any{}
		for name, x := range h.net.xdps {
			st.Uplinks["xdp:"+name] = x.Stats()
		}
	}
	return st
}
