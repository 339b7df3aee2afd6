package agent

import (
	"time"

	"github.com/colibrivm/colibri/agent/api"
	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/vmm"
)

// SpecJSON writes a VM's spec in the API's schema (an up file's): the
// body of a create request, and the spec of a VM in answers. Zero fields
// (defaults not applied yet) are left out.
func SpecJSON(s spec.VM) api.VMSpec {
	out := api.VMSpec{Name: s.Name, Kernel: s.Kernel, Initrd: s.Initrd, Cmdline: s.Cmdline, Append: s.Append, CPUs: s.CPUs,
		Class: s.Class, Console: s.Console, OnReboot: s.OnReboot, OnCrash: s.OnCrash}
	if s.Mem != 0 {
		out.Mem = spec.FormatSize(s.Mem)
	}
	for _, d := range s.Disks {
		out.Disks = append(out.Disks, api.Disk{Path: d.Path, ReadOnly: d.ReadOnly, OnError: d.OnError})
	}
	for _, n := range s.NICs {
		offloads := !n.NoOffloads
		ns := api.NICSpec{Switch: n.Switch, Offloads: &offloads}
		if len(n.MAC) > 0 {
			ns.MAC = n.MAC.String()
		}
		out.NICs = append(out.NICs, ns)
	}
	return out
}

func vmJSON(info host.VMInfo) api.VM {
	out := api.VM{Name: info.Name, State: string(info.State), Spec: SpecJSON(info.Spec), Created: info.Created,
		Restarts: info.Restarts, VCPUs: []api.VCPU{}, NICs: []api.NIC{}, Disks: []api.Disk{}, ConsoleBytes: info.ConsoleBytes, ConsoleLostBytes: info.ConsoleLost}
	if !info.Started.IsZero() {
		t := info.Started
		out.Started = &t
	}
	if info.Exit != nil {
		e := exitJSON(info.Exit)
		out.Exit = &e
	}
	for _, c := range info.VCPUs {
		out.VCPUs = append(out.VCPUs, api.VCPU{ID: c.ID, TID: c.TID, Running: c.Running, RunSeconds: c.RunTime.Seconds(),
			WaitSeconds: c.WaitTime.Seconds(), Preemptions: c.Preemptions})
	}
	for _, n := range info.NICs {
		// The port's rx is what the guest transmitted.
		jn := api.NIC{MAC: n.MAC, Switch: n.Switch, Port: n.Port, Paused: n.Paused,
			TxPackets: n.PortStats.RxPackets, TxBytes: n.PortStats.RxBytes, RxPackets: n.PortStats.TxPackets, RxBytes: n.PortStats.TxBytes,
			Drops: dropsJSON(n.PortStats.Drops)}
		if d := n.Device; d != nil {
			jn.Kicks, jn.RxInterrupts, jn.TxInterrupts, jn.TxMalformed = d.Kicks, d.RxInterrupts, d.TxInterrupts, d.TxMalformed
		}
		out.NICs = append(out.NICs, jn)
	}
	for _, d := range info.Disks {
		out.Disks = append(out.Disks, api.Disk{Path: d.Path, ReadOnly: d.ReadOnly, OnError: d.OnError})
	}
	return out
}

func exitJSON(e *host.Exit) api.Exit {
	out := api.Exit{Reason: e.Kind.String(), Forced: e.Forced, Status: e.Status(), At: e.At}
	if e.Err != nil {
		out.Error = e.Err.Error()
	}
	return out
}

// dropsJSON lists a port's drops by cause, every cause present.
func dropsJSON(d netstack.DropStats) map[string]uint64 {
	return map[string]uint64{
		"no_room": d.NoRoom, "port_down": d.PortDown, "paused": d.Paused, "runt": d.Runt, "bad_source": d.BadSource,
		"spoofed": d.Spoofed, "filtered": d.Filtered, "bad_offload": d.BadOffload,
	}
}

func countersJSON(st vmm.Stats) api.Counters {
	out := api.Counters{FirstOutputSeconds: st.FirstOutput.Seconds(), GuestInitSeconds: st.GuestInit.Seconds(),
		UserspaceExits: st.UserExits, KVMExits: st.KVMExits, Kicks: st.Kicks, Parks: st.Parks, Pauses: st.Pauses,
		UnhandledPIO: st.UnhandledPIO, UnhandledMMIO: st.UnhandledMMIO}
	if out.UserspaceExits == nil {
		out.UserspaceExits = map[string]uint64{}
	}
	if out.KVMExits == nil {
		out.KVMExits = map[string]uint64{}
	}
	return out
}

// durationJSON writes a duration, "" for none.
func durationJSON(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func schedJSON(si host.SchedInfo) api.Sched {
	out := api.Sched{Enabled: si.Enabled, Policy: si.Policy.Name, Threshold: durationJSON(si.Policy.Threshold),
		Quantum: durationJSON(si.Policy.Quantum), Grace: durationJSON(si.Policy.Grace), Cores: si.Cores, Mode: si.Mode,
		Period: durationJSON(si.Period), CPU: si.CPU, Observer: si.Observer, ObserverError: si.ObserverError, VCPUs: si.VCPUs,
		Passes: si.Stats.Passes, Parks: si.Stats.Parks, Unparks: si.Stats.Unparks, Migrations: si.Stats.Migrations,
		Errors: si.Stats.Errors, CPUSeconds: si.Stats.CPUTime.Seconds()}
	if out.Cores == nil {
		out.Cores = []int{}
	}
	if !si.Enabled {
		out.CPU = -1
	}
	return out
}

func eventJSON(ev host.Event) api.Event {
	return api.Event{Seq: ev.Seq, Time: ev.Time, Type: string(ev.Type), VM: ev.VM, State: string(ev.State),
		Previous: string(ev.Previous), Reason: ev.Reason, Lost: ev.Lost}
}
