// Package api is the wire format of colibri's agent API: the JSON bodies of
// its requests and responses, and the OpenAPI 3 document that specifies
// every route (Spec). The agent serves it over HTTP/1.1 on a Unix socket;
// the client package speaks it.
//
// Conventions: names are snake_case; durations are strings in Go's
// syntax ("30s", "20us"); sizes are strings with a binary unit ("256M");
// times are RFC 3339. An error is a status code with an Error body.
package api

import (
	_ "embed"
	"time"
)

// Version is the API's version, in the OpenAPI document's info.version.
const Version = "1.0.0"

// Spec is the OpenAPI 3 document of the API.
//
//go:embed openapi.yaml
var Spec []byte

// Error is the body of every error response.
type Error struct {
	// Error says what is wrong, in one sentence.
	Error string `json:"error"`
}

// Ping is the body of GET /ping and GET /version.
type Ping struct {
	// Version is colibri's version; API the API's.
	Version string `json:"version"`
	API     string `json:"api"`
}

// VMSpec describes a VM: the same schema as a VM of an up file.
type VMSpec struct {
	Name     string    `json:"name"`
	Kernel   string    `json:"kernel,omitempty"`
	Initrd   string    `json:"initrd,omitempty"`
	Cmdline  string    `json:"cmdline,omitempty"`
	Append   string    `json:"append,omitempty"`
	CPUs     int       `json:"cpus,omitempty"`
	Mem      string    `json:"mem,omitempty"`
	Class    string    `json:"class,omitempty"`
	Disks    []Disk    `json:"disks,omitempty"`
	NICs     []NICSpec `json:"nics,omitempty"`
	Console  string    `json:"console,omitempty"`
	OnReboot string    `json:"on_reboot,omitempty"`
	OnCrash  string    `json:"on_crash,omitempty"`
}

// Disk is a virtio-blk disk.
type Disk struct {
	Path     string `json:"path"`
	ReadOnly bool   `json:"readonly,omitempty"`
	// OnError is report (the guest sees the I/O error) or stop (the VM
	// ends as failed).
	OnError string `json:"on_error,omitempty"`
}

// NICSpec is a virtio-net NIC on a switch.
type NICSpec struct {
	Switch   string `json:"switch,omitempty"`
	MAC      string `json:"mac,omitempty"`
	Offloads *bool  `json:"offloads,omitempty"`
}

// VM is a VM as it is now (GET /vms/{name}).
type VM struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Spec is the VM's spec with the defaults filled in.
	Spec     VMSpec     `json:"spec"`
	Created  time.Time  `json:"created"`
	Started  *time.Time `json:"started,omitempty"`
	Restarts int        `json:"restarts"`
	// Exit is how the VM's last run ended; absent while it runs.
	Exit         *Exit  `json:"exit,omitempty"`
	VCPUs        []VCPU `json:"vcpus"`
	NICs         []NIC  `json:"nics"`
	Disks        []Disk `json:"disks"`
	ConsoleBytes int64  `json:"console_bytes"`
	// ConsoleLostBytes is how much console output the VM's console file
	// or terminal never got because it fell behind the guest.
	ConsoleLostBytes int64 `json:"console_lost_bytes"`
}

// Exit says how a VM's run ended.
type Exit struct {
	// Reason is power-off, reset, stopped, error or crash.
	Reason string `json:"reason"`
	// Error is the failure, for error and crash.
	Error string `json:"error,omitempty"`
	// Forced is true when a stop had to force the VM off.
	Forced bool `json:"forced"`
	// Status is a supervisor's exit status: 0 (powered off, rebooted),
	// 137 (forced off), 1 (failed).
	Status int       `json:"status"`
	At     time.Time `json:"at"`
}

// VCPU is one vCPU of a running VM.
type VCPU struct {
	ID      int  `json:"id"`
	TID     int  `json:"tid"`
	Running bool `json:"running"`
	// RunSeconds and WaitSeconds are the time its thread spent on a host
	// CPU and waiting on a host runqueue ("CPU ready"), from the eBPF
	// observer (0 without it).
	RunSeconds  float64 `json:"run_seconds"`
	WaitSeconds float64 `json:"wait_seconds"`
	Preemptions uint64  `json:"preemptions"`
}

// NIC is one NIC of a VM with its counters, from the guest's side:
// transmit is what the guest sent.
type NIC struct {
	MAC       string `json:"mac"`
	Switch    string `json:"switch"`
	Port      string `json:"port"`
	Paused    bool   `json:"paused"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	// Drops are frames to or from the guest that the switch dropped, by
	// cause.
	Drops map[string]uint64 `json:"drops"`
	// Kicks and the interrupts are the device's (0 when not running).
	Kicks        uint64 `json:"kicks"`
	RxInterrupts uint64 `json:"rx_interrupts"`
	TxInterrupts uint64 `json:"tx_interrupts"`
	TxMalformed  uint64 `json:"tx_malformed"`
}

// Counters are a VM's measurements (GET /vms/{name}/counters).
type Counters struct {
	// FirstOutputSeconds and GuestInitSeconds are the times from the
	// start of the VM's current (or last) run to the guest's first
	// console byte and to its init's boot-timer write (0: not yet).
	FirstOutputSeconds float64 `json:"first_output_seconds"`
	GuestInitSeconds   float64 `json:"guest_init_seconds"`
	// UserspaceExits are exits to the VMM by reason; KVMExits KVM's own
	// counters (exits it handled in the kernel included).
	UserspaceExits map[string]uint64 `json:"userspace_exits"`
	KVMExits       map[string]uint64 `json:"kvm_exits"`
	Kicks          uint64            `json:"kicks"`
	Parks          uint64            `json:"parks"`
	Pauses         uint64            `json:"pauses"`
	UnhandledPIO   uint64            `json:"unhandled_pio"`
	UnhandledMMIO  uint64            `json:"unhandled_mmio"`
}

// Stop is the optional body of POST /vms/{name}/stop.
type Stop struct {
	// Force ends the VM at once instead of pressing its power button.
	Force bool `json:"force,omitempty"`
	// Timeout is how long a graceful stop waits before forcing (default:
	// the agent's).
	Timeout string `json:"timeout,omitempty"`
}

// Sched is the scheduler's state (GET /sched).
type Sched struct {
	Enabled bool `json:"enabled"`
	// Policy and its parameters (durations, "" when the policy takes
	// none).
	Policy    string `json:"policy"`
	Threshold string `json:"threshold,omitempty"`
	Quantum   string `json:"quantum,omitempty"`
	Grace     string `json:"grace,omitempty"`
	Cores     []int  `json:"cores"`
	Mode      string `json:"mode,omitempty"`
	Period    string `json:"period,omitempty"`
	// CPU is the scheduler thread's core, -1 when unpinned.
	CPU           int     `json:"cpu"`
	Observer      bool    `json:"observer"`
	ObserverError string  `json:"observer_error,omitempty"`
	VCPUs         int     `json:"vcpus"`
	Passes        uint64  `json:"passes"`
	Parks         uint64  `json:"parks"`
	Unparks       uint64  `json:"unparks"`
	Migrations    uint64  `json:"migrations"`
	Errors        uint64  `json:"errors"`
	CPUSeconds    float64 `json:"cpu_seconds"`
}

// SetSched is the body of PUT /sched: a policy and its parameters
// (durations; absent: the policy's defaults).
type SetSched struct {
	Policy    string `json:"policy"`
	Threshold string `json:"threshold,omitempty"`
	Quantum   string `json:"quantum,omitempty"`
	Grace     string `json:"grace,omitempty"`
}

// Switch is one L2 switch with its ports (GET /switches).
type Switch struct {
	Name  string `json:"name"`
	MACs  int    `json:"macs"`
	Ports []Port `json:"ports"`
}

// Port is one switch port, from the switch's side: rx is what it
// received from the port.
type Port struct {
	Name      string            `json:"name"`
	Queues    int               `json:"queues"`
	Paused    bool              `json:"paused"`
	RxPackets uint64            `json:"rx_packets"`
	RxBytes   uint64            `json:"rx_bytes"`
	TxPackets uint64            `json:"tx_packets"`
	TxBytes   uint64            `json:"tx_bytes"`
	Drops     map[string]uint64 `json:"drops"`
}

// Event is one line of GET /events.
type Event struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	VM       string    `json:"vm,omitempty"`
	State    string    `json:"state,omitempty"`
	Previous string    `json:"previous,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Lost     uint64    `json:"lost,omitempty"`
}
