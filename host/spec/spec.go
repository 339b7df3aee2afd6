// Package spec is the declarative description of a colibri host and its
// VMs: the schema, parser and checks of the file `colibri up FILE` runs and
// the agent reads (the host cores given to the datapath's pollers and to
// the scheduler, the L2 switches and their uplinks, and the VMs with their
// disks and NICs), and of one VM as the agent's API creates it.
//
// The file is YAML or JSON with the same schema:
//
//	pollers: {cores: [1]}                 # host cores for the datapath
//	                                      # also: spin (20ms: the longest idle poll before sleeping; 0: none)
//	sched: {policy: central, cores: [0]}  # linux | pinned | central | adaptive
//	                                      # also: period (5us), mode (adaptive | busy-poll | sleep),
//	                                      # cpu (the scheduler thread's core), fifo (priority);
//	                                      # central: threshold, quantum, grace
//	switches:
//	  - name: sw0
//	    uplinks: [{tap: tap0}, {xdp: veth0}]
//	vms:
//	  - name: a
//	    kernel: path/bzImage              # empty: the image from `make images`
//	    initrd: path/initrd
//	    cmdline: "console=ttyS0 ..."
//	    append: "loglevel=4"              # added after cmdline (or the default one)
//	    cpus: 1
//	    mem: 256M
//	    class: lc                         # lc | batch
//	    disks: [{path: a.img, readonly: false}]  # also: on_error (report | stop)
//	    nics: [{switch: sw0, mac: "52:54:00:00:00:0a"}]  # also: offloads (true)
//	    console: a.log                    # empty: stdout, lines prefixed "a| "
//	    on_reboot: stop                   # stop | restart, when the guest reboots
//	    on_crash: stop                    # stop | restart, when it triple-faults
//
// [Parse] decodes strictly (an unknown or misspelt key, a duplicate key, a
// value of the wrong kind, a second document or trailing data is an error),
// resolves relative paths against the file's directory, applies the
// defaults ([File.Normalize]) and checks the result ([File.Validate]). Every
// error is one [*Error] naming the field path (vms[1].mem) and, where the
// file says, its line.
//
// [ParseVM] decodes one VM the same way; [File.Add] checks it against a
// host's switches and VMs.
//
// Defaults: cpus 1, mem 256M, class batch, on_reboot and on_crash stop,
// sched.policy linux (also when
// there is no sched section), a NIC without a switch joins the only switch
// when exactly one is declared, and a NIC without a MAC gets a locally
// administered 52:54:00:xx:xx:xx derived from its VM's and its own index,
// never one the file names explicitly. Empty kernel, initrd, cmdline and
// console mean the VMM's defaults; empty pollers.cores and sched.cores leave
// the choice of cores to the VMM.
package spec

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults and limits.
const (
	// DefaultCPUs is a VM's vCPU count when the file gives none.
	DefaultCPUs = 1
	// DefaultMem is a VM's memory size when the file gives none.
	DefaultMem = 256 << 20
	// DefaultClass is a VM's scheduling class when the file gives none.
	DefaultClass = ClassBatch
	// DefaultPolicy is the scheduling policy when the file gives none.
	DefaultPolicy = PolicyLinux
	// DefaultSchedMode is the scheduler thread's mode when the file gives
	// none.
	DefaultSchedMode = "adaptive"
	// DefaultOnReboot and DefaultOnCrash are what happens to a VM whose
	// guest reboots or crashes when the file does not say.
	DefaultOnReboot = ActionStop
	DefaultOnCrash  = ActionStop

	// MaxCPUs is the most vCPUs a VM may declare (the VMM may allow fewer).
	MaxCPUs = 255
	// MinMem and MaxMem bound a VM's memory size.
	MinMem = 32 << 20
	MaxMem = 1 << 40
	// MaxNameLen is the longest VM or switch name: names become TAP and
	// port names, which Linux limits to 15 bytes.
	MaxNameLen = 15
	// MaxCore is the highest host core number a file may name (an affinity
	// mask holds 1024 CPUs).
	MaxCore = 1023
)

// VM classes, for the scheduler.
const (
	// ClassLC is a latency-critical VM.
	ClassLC = "lc"
	// ClassBatch is a throughput VM that may be preempted for LC VMs.
	ClassBatch = "batch"
)

// What to do when a guest reboots or crashes (on_reboot, on_crash), or a
// disk's write or flush fails (a disk's on_error: stop or report).
const (
	// ActionStop ends the VM.
	ActionStop = "stop"
	// DiskReport tells the guest of a failed write or flush.
	DiskReport = "report"
	// ActionRestart boots it again from its kernel.
	ActionRestart = "restart"
)

// Scheduling policies (the names the sched package knows).
const (
	PolicyLinux   = "linux"
	PolicyPinned  = "pinned"
	PolicyCentral = "central"
	// PolicyAdaptive shares cores fairly between VMs, with slices adapted
	// to what the observer sees.
	PolicyAdaptive = "adaptive"
)

// File is what an up file declares.
type File struct {
	// Pollers are the datapath's polling threads.
	Pollers Pollers
	// Sched is the vCPU scheduler's configuration.
	Sched Sched
	// Switches are the L2 switches the VMs' NICs join.
	Switches []Switch
	// VMs are the guests to run; at least one.
	VMs []VM
}

// Pollers configures the datapath's polling threads.
type Pollers struct {
	// Cores are the host cores that each get one poller thread. Empty: the
	// VMM chooses. None of them may also be in Sched.Cores.
	Cores []int
	// Spin is the longest a poller polls an idle datapath before it
	// sleeps until a guest's kick; it adapts up to this (as KVM's halt
	// polling does). 0: it sleeps after every pass that found nothing.
	// nil: the datapath's default (20ms for a poller with a core of its
	// own, 0 for one that shares its core with vCPUs).
	Spin *time.Duration
	// TxNoticeDelay is the longest a poller holds back the interrupt
	// that tells a guest its transmitted frames are done, after a pass
	// that took only a few of them; the guest's driver often frees them
	// meanwhile and needs no interrupt. 0: every notice at once. nil: the
	// datapath's default (1ms).
	TxNoticeDelay *time.Duration
}

// Sched configures the vCPU scheduler.
type Sched struct {
	// Policy is linux, pinned, central or adaptive. Default linux.
	Policy string
	// Cores are the host cores the scheduler manages (its cpuset). Empty:
	// every online core the pollers do not use.
	Cores []int
	// Threshold, Quantum and Grace are the central policy's parameters
	// (see sched.CentralConfig); zero means the policy's default. They are
	// written as durations ("20us", "2ms") and only allowed with central.
	Threshold time.Duration
	Quantum   time.Duration
	Grace     time.Duration
	// Period is the time between the starts of two scheduler passes, for
	// any policy; zero means the scheduler's default (5µs).
	Period time.Duration
	// Mode is how the scheduler thread waits between passes: busy-poll,
	// sleep or adaptive (busy-poll while a vCPU is active, sleep once all
	// are idle). Default adaptive.
	Mode string
	// CPU is the host core the scheduler thread is pinned to; nil (the
	// default) leaves it unpinned. It may not be one of Cores.
	CPU *int
	// FIFO, if not zero, runs the scheduler thread SCHED_FIFO at this
	// priority (1–99).
	FIFO int
}

// Switch is an L2 learning switch.
type Switch struct {
	// Name is the switch's name: [a-z0-9][a-z0-9-]*, at most 15 bytes.
	Name string
	// Uplinks connect the switch to the host.
	Uplinks []Uplink
}

// Uplink connects a switch to the host; exactly one field is set.
type Uplink struct {
	// TAP names a TAP device (created if absent).
	TAP string
	// XDP names a host interface served by an AF_XDP socket.
	XDP string
}

// VM is one guest.
type VM struct {
	// Name is the VM's name: [a-z0-9][a-z0-9-]*, at most 15 bytes. It
	// prefixes the console's lines and names the VM's switch ports.
	Name string
	// Kernel is the kernel image; empty means the default image.
	Kernel string
	// Initrd is the initial ramdisk; empty means the default one (when
	// Kernel is empty too) or none.
	Initrd string
	// Cmdline is the kernel command line; empty means the VMM's default.
	Cmdline string
	// Append is added after Cmdline (or after the default command line).
	Append string
	// CPUs is the number of vCPUs, 1 to MaxCPUs. Default 1.
	CPUs int
	// Mem is the guest memory size in bytes, a multiple of 4 KiB from
	// MinMem to MaxMem. The file writes it as plain bytes or with a binary
	// unit: 256M, 1G, 512MiB. Default 256M.
	Mem uint64
	// Class is lc or batch. Default batch.
	Class string
	// Disks are virtio-blk disks, in order.
	Disks []Disk
	// NICs are virtio-net NICs, in order.
	NICs []NIC
	// Console is a file the serial console goes to; empty means stdout,
	// each line prefixed with "name| ".
	Console string
	// OnReboot is what happens when the guest reboots (a reset it asked
	// for): stop or restart. Default stop.
	OnReboot string
	// OnCrash is what happens when the guest crashes (a triple fault):
	// stop or restart. Default stop. A crash is a failure either way.
	OnCrash string
}

// Disk is a virtio-blk disk backed by a file.
type Disk struct {
	// Path is the backing file.
	Path string
	// ReadOnly makes the disk read-only. A file shared by several disks
	// must be read-only in all of them.
	ReadOnly bool
	// OnError is what a failed write or flush of the file does: report
	// (the default: the guest sees an I/O error, and every later flush
	// fails too) or stop (the VM ends as failed, the request unanswered,
	// as QEMU's werror=stop pauses it).
	OnError string
}

// NIC is a virtio-net NIC on a switch.
type NIC struct {
	// Switch is the switch's name. Default: the only switch, when exactly
	// one is declared.
	Switch string
	// MAC is the NIC's unicast address. Default: assigned by Normalize.
	MAC net.HardwareAddr
	// NoOffloads withholds checksum and TSO offloads from the guest
	// ("offloads: false"; default: offered).
	NoOffloads bool
}

// Format is a file's syntax.
type Format int

// Formats.
const (
	// Auto picks JSON for content that starts with '{' and is valid JSON,
	// YAML otherwise.
	Auto Format = iota
	// YAML is YAML 1.2 (one document).
	YAML
	// JSON is one JSON object.
	JSON
)

func (f Format) String() string {
	switch f {
	case Auto:
		return "auto"
	case YAML:
		return "YAML"
	case JSON:
		return "JSON"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// Error is a problem with an up file.
type Error struct {
	// File is the file's name (set by Load).
	File string
	// Line is the 1-based line the problem is on, 0 if unknown.
	Line int
	// Path is the field's path, like vms[1].nics[0].mac; empty for the
	// file as a whole.
	Path string
	// Msg says what is wrong.
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and parses the up file at path. Its format comes from the
// extension (.json; .yaml or .yml), else from its content; relative paths
// in it are resolved against its directory. Errors other than I/O ones are
// [*Error]s with File set to path.
func Load(path string) (*File, error) { return load(path, true) }

// LoadHost is Load for a file of host settings (pollers, sched, switches)
// that may declare no VM at all, as the agent reads it.
func LoadHost(path string) (*File, error) { return load(path, false) }

func load(path string, needVMs bool) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	format := Auto
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		format = JSON
	case ".yaml", ".yml":
		format = YAML
	}
	f, err := parse(data, format, filepath.Dir(path), needVMs)
	if e, ok := err.(*Error); ok {
		e.File = path
	}
	return f, err
}

// Parse decodes an up file, resolves its relative paths against baseDir
// (made absolute; empty leaves them as they are), applies the defaults and
// validates it. Errors are [*Error]s.
func Parse(data []byte, format Format, baseDir string) (*File, error) {
	return parse(data, format, baseDir, true)
}

// ParseHost is Parse for host settings that may declare no VM.
func ParseHost(data []byte, format Format, baseDir string) (*File, error) {
	return parse(data, format, baseDir, false)
}

func parse(data []byte, format Format, baseDir string, needVMs bool) (*File, error) {
	baseDir, format, err := prepare(data, format, baseDir)
	if err != nil {
		return nil, err
	}
	var raw rawFile
	lines, err := decode(data, format, &raw, "empty file (declare at least vms)")
	if err != nil {
		return nil, err
	}
	f, err := raw.convert(baseDir)
	if err == nil {
		f.Normalize()
		err = f.validate(needVMs)
	}
	if err != nil {
		err.Line = lineOf(lines, err.Path)
		return nil, err
	}
	return f, nil
}

// ParseVM decodes one VM as a VM entry of an up file describes it (the
// agent's create body), resolving its relative paths against baseDir. It
// checks the VM on its own: [File.Add] checks it against a host's
// switches and other VMs and fills in the defaults that depend on them.
// Errors are [*Error]s whose paths start at the VM (mem, nics[0].mac).
func ParseVM(data []byte, format Format, baseDir string) (*VM, error) {
	baseDir, format, err := prepare(data, format, baseDir)
	if err != nil {
		return nil, err
	}
	var raw rawVM
	lines, err := decode(data, format, &raw, "empty VM description (give at least its name)")
	if err != nil {
		return nil, err
	}
	vm, err := raw.convert(baseDir, "")
	if err == nil {
		err = vm.validateAlone("")
	}
	if err != nil {
		err.Line = lineOf(lines, err.Path)
		return nil, err
	}
	return &vm, nil
}

// prepare makes baseDir absolute and resolves Auto.
func prepare(data []byte, format Format, baseDir string) (string, Format, *Error) {
	if baseDir != "" {
		abs, err := filepath.Abs(baseDir)
		if err != nil {
			return "", format, &Error{Msg: fmt.Sprintf("base directory %q: %v", baseDir, err)}
		}
		baseDir = abs
	}
	if format == Auto {
		format = sniff(data)
	}
	return baseDir, format, nil
}

// decode decodes data in format into raw, returning each field path's line.
func decode[T any](data []byte, format Format, raw *T, empty string) (map[string]int, *Error) {
	switch format {
	case YAML:
		return decodeYAML(data, raw, empty)
	case JSON:
		return decodeJSON(data, raw, empty)
	}
	return nil, &Error{Msg: fmt.Sprintf("unknown format %v", format)}
}

// sniff tells JSON from YAML by content.
func sniff(data []byte) Format {
	t := bytes.TrimLeft(data, " \t\r\n")
	if len(t) > 0 && t[0] == '{' && jsonValid(data) {
		return JSON
	}
	return YAML
}

// lineOf finds the line of path or of its nearest ancestor in lines.
func lineOf(lines map[string]int, path string) int {
	for path != "" {
		if l, ok := lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}
