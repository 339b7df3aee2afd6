package exp

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/sched"
)

// Boot modes.
const (
	// BootOnce boots the VMs once and switches the policy live between
	// phases.
	BootOnce = "once"
	// BootPerPolicy boots the VMs afresh for every phase.
	BootPerPolicy = "per-policy"
)

// ClientHost is the LC client that runs on this host.
const ClientHost = "host"

// Defaults and limits of an experiment file.
const (
	DefaultRepeats  = 3
	DefaultWarmup   = 2 * time.Second
	DefaultDuration = 5 * time.Second
	DefaultMPS      = 1000
	DefaultMsgSize  = 64
	DefaultPort     = 11111
	// DefaultIsolated is the policy of the isolated run: each LC vCPU
	// pinned where the policies place it, the scheduler thread making its
	// passes, no batch work.
	DefaultIsolated = spec.PolicyPinned
	// DefaultTimelineRate is the per-core timeline's samples per second.
	DefaultTimelineRate = 1000
	// DefaultTimelineSpan is how much of each phase the timeline covers.
	DefaultTimelineSpan = 2 * time.Second

	maxRepeats  = 100
	maxPhases   = 64
	maxDuration = time.Hour
	maxMPS      = 1_000_000
	maxMsgSize  = 65000
	maxRate     = 10_000
)

// File is a parsed experiment file.
type File struct {
	// Host is the up-file part: pollers, sched, switches, VMs.
	Host spec.File
	// Boot is BootOnce or BootPerPolicy.
	Boot string
	// Repeats is how many times every phase runs.
	Repeats int
	// Warmup and Duration are each phase's unmeasured and measured time.
	Warmup, Duration time.Duration
	// Isolated is the policy of the isolated run (LC work only); nil: no
	// isolated run.
	Isolated *host.PolicySpec
	// Policies are the colocated phases, sweeps expanded, in file order.
	Policies []Policy
	// LC are the latency-critical workloads, Batch the batch ones.
	LC    []LC
	Batch []Batch
	// TimelineRate is the timeline's samples per second (0: none) over
	// the first TimelineSpan of each phase's measured time.
	TimelineRate int
	TimelineSpan time.Duration
}

// Policy is one colocated phase: a policy and its parameters.
type Policy struct {
	// Label names the phase in tables and plots: the policy's name, with
	// its parameters when the file gives any ("central threshold=1ms").
	Label string
	// Spec is what host.SetPolicy gets.
	Spec host.PolicySpec
}

// LC is a latency-critical workload: a sockperf server in a guest and a
// sockperf under-load (open-loop) client.
type LC struct {
	// Server is the VM running `sockperf server`.
	Server string
	// Client is ClientHost or a VM's name.
	Client string
	// MPS is the client's message rate; MsgSize its message size (bytes).
	MPS, MsgSize int
	// Port is the server's port.
	Port int
	// TCP uses TCP instead of UDP.
	TCP bool
}

// Name returns the workload's label.
func (l LC) Name() string {
	proto := "udp"
	if l.TCP {
		proto = "tcp"
	}
	return fmt.Sprintf("sockperf %s %s→%s %d/s", proto, l.Client, l.Server, l.MPS)
}

// Batch is a batch workload: stress-ng in a guest.
type Batch struct {
	// VM runs it.
	VM string
	// Args are stress-ng's stressor arguments ("--cpu 1"); the runner adds
	// --timeout and --metrics-brief.
	Args string
}

// Load reads and parses the experiment file at path; relative paths in it
// are resolved against its directory. Errors other than I/O ones are
// *spec.Error with File set.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(data, filepath.Dir(path))
	var se *spec.Error
	if errors.As(err, &se) {
		se.File = path
	}
	return f, err
}

// Parse decodes an experiment file (YAML, or JSON, which is YAML),
// resolving relative paths against baseDir. Errors are *spec.Error.
func Parse(data []byte, baseDir string) (*File, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &spec.Error{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, &spec.Error{Msg: "want a mapping with vms and experiment"}
	}
	top := doc.Content[0]
	at := -1
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "experiment" {
			if at >= 0 {
				return nil, &spec.Error{Line: top.Content[i].Line, Path: "experiment", Msg: "duplicate key"}
			}
			at = i
		}
	}
	if at < 0 {
		return nil, &spec.Error{Msg: "no experiment section (a plain up file runs with 'colibri up')"}
	}
	expNode := top.Content[at+1]
	rest, err := withoutKey(data, top, at)
	if err != nil {
		return nil, err
	}
	hostFile, err := spec.Parse(rest, spec.YAML, baseDir)
	if err != nil {
		return nil, err
	}
	f := &File{Host: *hostFile}
	if err := f.decode(expNode); err != nil {
		return nil, err
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	return f, nil
}

// withoutKey returns the document without the top-level key at index i of
// top. A block-style file has the key's lines blanked, so that the up
// file's errors keep their line numbers; a flow-style one (JSON) is
// encoded again without it.
func withoutKey(data []byte, top *yaml.Node, i int) ([]byte, error) {
	first := top.Content[i].Line
	last := -1 // through the end
	if i+2 < len(top.Content) {
		last = top.Content[i+2].Line - 1
	}
	if top.Style&yaml.FlowStyle == 0 && top.Content[i].Column == 1 && (last < 0 || last >= first) {
		lines := bytes.SplitAfter(data, []byte("\n"))
		for l := first - 1; l < len(lines) && (last < 0 || l < last); l++ {
			if bytes.HasSuffix(lines[l], []byte("\n")) {
				lines[l] = []byte("\n")
			} else {
				lines[l] = nil
			}
		}
		return bytes.Join(lines, nil), nil
	}
	cp := *top
	cp.Content = slices.Concat(top.Content[:i:i], top.Content[i+2:])
	out, err := yaml.Marshal(&cp)
	if err != nil {
		return nil, &spec.Error{Msg: fmt.Sprintf("re-encoding the up-file part: %v", err)}
	}
	return out, nil
}

// node helpers: each returns a *spec.Error naming the path and line.

func errAt(n *yaml.Node, path, format string, args ...any) *spec.Error {
	return &spec.Error{Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// fields checks that n is a mapping whose keys are among known, each
// once, and returns the values by key.
func fields(n *yaml.Node, path string, known ...string) (map[string]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		return nil, errAt(n, path, "want a mapping")
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		p := path + "." + k.Value
		if k.Kind != yaml.ScalarNode || !slices.Contains(known, k.Value) {
			return nil, errAt(k, p, "unknown key %q (known: %s)", k.Value, strings.Join(known, ", "))
		}
		if _, dup := out[k.Value]; dup {
			return nil, errAt(k, p, "duplicate key")
		}
		out[k.Value] = n.Content[i+1]
	}
	return out, nil
}

func scalar(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", errAt(n, path, "want a single value")
	}
	return n.Value, nil
}

func intIn(n *yaml.Node, path string, lo, hi int) (int, error) {
	s, err := scalar(n, path)
	if err != nil {
		return 0, err
	}
	v, perr := strconv.Atoi(s)
	if perr != nil || v < lo || v > hi {
		return 0, errAt(n, path, "want an integer from %d to %d, got %q", lo, hi, s)
	}
	return v, nil
}

func duration(n *yaml.Node, path string, lo, hi time.Duration) (time.Duration, error) {
	s, err := scalar(n, path)
	if err != nil {
		return 0, err
	}
	d, perr := time.ParseDuration(s)
	if perr != nil || d < lo || d > hi {
		return 0, errAt(n, path, "want a duration from %v to %v (like 2s, 500ms), got %q", lo, hi, s)
	}
	return d, nil
}

func boolean(n *yaml.Node, path string) (bool, error) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		return false, errAt(n, path, "want true or false")
	}
	return b, nil
}

func list(n *yaml.Node, path string) ([]*yaml.Node, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, errAt(n, path, "want a list")
	}
	return n.Content, nil
}

// decode reads the experiment section.
func (f *File) decode(n *yaml.Node) error {
	const p = "experiment"
	m, err := fields(n, p, "boot", "repeats", "warmup", "duration", "isolated", "policies", "lc", "batch", "timeline")
	if err != nil {
		return err
	}
	f.Boot, f.Repeats, f.Warmup, f.Duration = BootOnce, DefaultRepeats, DefaultWarmup, DefaultDuration
	f.TimelineRate, f.TimelineSpan = DefaultTimelineRate, DefaultTimelineSpan
	iso := &host.PolicySpec{Name: DefaultIsolated}
	if v, ok := m["boot"]; ok {
		if f.Boot, err = scalar(v, p+".boot"); err != nil {
			return err
		}
		if f.Boot != BootOnce && f.Boot != BootPerPolicy {
			return errAt(v, p+".boot", "want %s or %s, got %q", BootOnce, BootPerPolicy, f.Boot)
		}
	}
	if v, ok := m["repeats"]; ok {
		if f.Repeats, err = intIn(v, p+".repeats", 1, maxRepeats); err != nil {
			return err
		}
	}
	if v, ok := m["warmup"]; ok {
		if f.Warmup, err = duration(v, p+".warmup", 0, maxDuration); err != nil {
			return err
		}
	}
	if v, ok := m["duration"]; ok {
		if f.Duration, err = duration(v, p+".duration", time.Second, maxDuration); err != nil {
			return err
		}
	}
	if v, ok := m["isolated"]; ok {
		name, err := scalar(v, p+".isolated")
		if err != nil {
			return err
		}
		switch name {
		case "none":
			iso = nil
		default:
			if err := knownPolicy(v, p+".isolated", name); err != nil {
				return err
			}
			iso.Name = name
		}
	}
	f.Isolated = iso
	v, ok := m["policies"]
	if !ok {
		return errAt(n, p+".policies", "missing: name the policies to compare (linux, pinned, central, ...)")
	}
	items, err := list(v, p+".policies")
	if err != nil {
		return err
	}
	for i, it := range items {
		ps, err := decodePolicy(it, fmt.Sprintf("%s.policies[%d]", p, i))
		if err != nil {
			return err
		}
		f.Policies = append(f.Policies, ps...)
		if len(f.Policies) > maxPhases {
			return errAt(it, p+".policies", "more than %d phases after expanding the sweeps", maxPhases)
		}
	}
	if len(f.Policies) == 0 {
		return errAt(v, p+".policies", "empty: name at least one policy")
	}
	if len(f.Policies) > maxPhases {
		return errAt(v, p+".policies", "%d phases after expanding the sweeps: at most %d", len(f.Policies), maxPhases)
	}
	if v, ok := m["lc"]; ok {
		items, err := list(v, p+".lc")
		if err != nil {
			return err
		}
		for i, it := range items {
			l, err := decodeLC(it, fmt.Sprintf("%s.lc[%d]", p, i))
			if err != nil {
				return err
			}
			f.LC = append(f.LC, l)
		}
	}
	if len(f.LC) == 0 {
		return errAt(n, p+".lc", "missing: an experiment measures at least one LC workload")
	}
	if v, ok := m["batch"]; ok {
		items, err := list(v, p+".batch")
		if err != nil {
			return err
		}
		for i, it := range items {
			path := fmt.Sprintf("%s.batch[%d]", p, i)
			bm, err := fields(it, path, "vm", "args")
			if err != nil {
				return err
			}
			b := Batch{Args: "--cpu 1"}
			if x, ok := bm["vm"]; ok {
				if b.VM, err = scalar(x, path+".vm"); err != nil {
					return err
				}
			}
			if x, ok := bm["args"]; ok {
				if b.Args, err = scalar(x, path+".args"); err != nil {
					return err
				}
				if !safeArgs(b.Args) {
					return errAt(x, path+".args", "stress-ng arguments may hold letters, digits, spaces and - _ . , = : only")
				}
			}
			if b.VM == "" {
				return errAt(it, path+".vm", "missing: the VM that runs stress-ng")
			}
			f.Batch = append(f.Batch, b)
		}
	}
	if v, ok := m["timeline"]; ok {
		tm, err := fields(v, p+".timeline", "rate", "seconds")
		if err != nil {
			return err
		}
		if x, ok := tm["rate"]; ok {
			if f.TimelineRate, err = intIn(x, p+".timeline.rate", 0, maxRate); err != nil {
				return err
			}
		}
		if x, ok := tm["seconds"]; ok {
			s, err := scalar(x, p+".timeline.seconds")
			if err != nil {
				return err
			}
			sec, perr := strconv.ParseFloat(s, 64)
			if perr != nil || sec <= 0 || sec > 60 {
				return errAt(x, p+".timeline.seconds", "want seconds from 0 to 60, got %q", s)
			}
			f.TimelineSpan = time.Duration(sec * float64(time.Second))
		}
	}
	return nil
}

// safeArgs accepts what can go into a guest's shell command unquoted.
func safeArgs(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune(" -_.,=:", r):
		default:
			return false
		}
	}
	return true
}

func knownPolicy(n *yaml.Node, path, name string) error {
	if !slices.Contains(sched.PolicyNames(), name) {
		return errAt(n, path, "unknown policy %q (this build knows: %s)", name, strings.Join(sched.PolicyNames(), ", "))
	}
	return nil
}

// decodePolicy reads one policies entry: a name, or a mapping with policy
// and its parameters, any of which may be a list (a sweep: one phase per
// combination, the later parameters varying fastest).
func decodePolicy(n *yaml.Node, path string) ([]Policy, error) {
	if n.Kind == yaml.ScalarNode {
		if err := knownPolicy(n, path, n.Value); err != nil {
			return nil, err
		}
		return []Policy{{Label: n.Value, Spec: host.PolicySpec{Name: n.Value}}}, nil
	}
	params := []string{"threshold", "quantum", "grace"}
	m, err := fields(n, path, append([]string{"policy", "label"}, params...)...)
	if err != nil {
		return nil, err
	}
	pn, ok := m["policy"]
	if !ok {
		return nil, errAt(n, path+".policy", "missing: the policy's name")
	}
	name, err := scalar(pn, path+".policy")
	if err != nil {
		return nil, err
	}
	if err := knownPolicy(pn, path+".policy", name); err != nil {
		return nil, err
	}
	label := ""
	if l, ok := m["label"]; ok {
		if label, err = scalar(l, path+".label"); err != nil {
			return nil, err
		}
	}
	out := []Policy{{Label: name, Spec: host.PolicySpec{Name: name}}}
	for _, prm := range params {
		v, ok := m[prm]
		if !ok {
			continue
		}
		vals := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			if len(v.Content) == 0 {
				return nil, errAt(v, path+"."+prm, "an empty sweep")
			}
			vals = v.Content
		}
		if len(out)*len(vals) > maxPhases {
			return nil, errAt(v, path+"."+prm, "the sweep makes more than %d phases", maxPhases)
		}
		var next []Policy
		for _, p := range out {
			for j, vn := range vals {
				vp := path + "." + prm
				if v.Kind == yaml.SequenceNode {
					vp = fmt.Sprintf("%s[%d]", vp, j)
				}
				d, err := duration(vn, vp, time.Nanosecond, time.Minute)
				if err != nil {
					return nil, err
				}
				q := p
				switch prm {
				case "threshold":
					q.Spec.Threshold = d
				case "quantum":
					q.Spec.Quantum = d
				case "grace":
					q.Spec.Grace = d
				}
				q.Label = fmt.Sprintf("%s %s=%v", q.Label, prm, d)
				next = append(next, q)
			}
		}
		out = next
	}
	if label != "" {
		if len(out) > 1 {
			return nil, errAt(n, path+".label", "a label names one phase, and this entry is a sweep of %d", len(out))
		}
		out[0].Label = label
	}
	return out, nil
}

func decodeLC(n *yaml.Node, path string) (LC, error) {
	m, err := fields(n, path, "server", "client", "mps", "msg_size", "port", "tcp")
	if err != nil {
		return LC{}, err
	}
	l := LC{Client: ClientHost, MPS: DefaultMPS, MsgSize: DefaultMsgSize, Port: DefaultPort}
	if v, ok := m["server"]; ok {
		if l.Server, err = scalar(v, path+".server"); err != nil {
			return l, err
		}
	}
	if l.Server == "" {
		return l, errAt(n, path+".server", "missing: the VM that runs the server")
	}
	if v, ok := m["client"]; ok {
		if l.Client, err = scalar(v, path+".client"); err != nil {
			return l, err
		}
	}
	if v, ok := m["mps"]; ok {
		if l.MPS, err = intIn(v, path+".mps", 1, maxMPS); err != nil {
			return l, err
		}
	}
	if v, ok := m["msg_size"]; ok {
		if l.MsgSize, err = intIn(v, path+".msg_size", 14, maxMsgSize); err != nil {
			return l, err
		}
	}
	if v, ok := m["port"]; ok {
		if l.Port, err = intIn(v, path+".port", 1, 65535); err != nil {
			return l, err
		}
	}
	if v, ok := m["tcp"]; ok {
		if l.TCP, err = boolean(v, path+".tcp"); err != nil {
			return l, err
		}
	}
	return l, nil
}

// check holds the experiment against its VMs and switches.
func (f *File) check() error {
	vms := map[string]spec.VM{}
	for i, v := range f.Host.VMs {
		vms[v.Name] = v
		if strings.Contains(v.Cmdline+" "+v.Append, "colibri.run=") {
			return &spec.Error{Path: fmt.Sprintf("vms[%d].append", i), Msg: "an experiment's VMs take their colibri.run= from the runner: remove it"}
		}
	}
	used := map[string]string{}
	use := func(vm, role, path string) error {
		if _, ok := vms[vm]; !ok {
			return &spec.Error{Path: path, Msg: fmt.Sprintf("no VM named %q", vm)}
		}
		if prev, ok := used[vm]; ok && (prev == "batch" || role == "batch") {
			return &spec.Error{Path: path, Msg: fmt.Sprintf("VM %s already runs the %s workload: a VM runs batch work or LC work, not both", vm, prev)}
		}
		used[vm] = role
		return nil
	}
	for i, l := range f.LC {
		p := fmt.Sprintf("experiment.lc[%d]", i)
		if err := use(l.Server, "lc", p+".server"); err != nil {
			return err
		}
		srv := vms[l.Server]
		if len(srv.NICs) == 0 {
			return &spec.Error{Path: p + ".server", Msg: fmt.Sprintf("VM %s has no NIC for the client to reach", l.Server)}
		}
		sw := srv.NICs[0].Switch
		if l.Client == ClientHost {
			if _, ok := f.hostTAP(sw); !ok {
				return &spec.Error{Path: p + ".client", Msg: fmt.Sprintf("a client on the host reaches the server through a TAP uplink of switch %s: add uplinks: [{tap: NAME}] to it", sw)}
			}
			continue
		}
		if err := use(l.Client, "lc client", p+".client"); err != nil {
			return err
		}
		if !slices.ContainsFunc(vms[l.Client].NICs, func(n spec.NIC) bool { return n.Switch == sw }) {
			return &spec.Error{Path: p + ".client", Msg: fmt.Sprintf("VM %s has no NIC on switch %s, the server's", l.Client, sw)}
		}
	}
	for i, b := range f.Batch {
		if err := use(b.VM, "batch", fmt.Sprintf("experiment.batch[%d].vm", i)); err != nil {
			return err
		}
	}
	if f.Isolated != nil && len(f.Batch) == 0 {
		// Without batch work every phase is isolated: nothing to compare.
		f.Isolated = nil
	}
	return nil
}

// hostTAP returns the first TAP uplink of the switch named sw.
func (f *File) hostTAP(sw string) (string, bool) {
	for _, s := range f.Host.Switches {
		if s.Name != sw {
			continue
		}
		for _, u := range s.Uplinks {
			if u.TAP != "" {
				return u.TAP, true
			}
		}
	}
	return "", false
}

// switchIndex returns the index of switch sw in the file.
func (f *File) switchIndex(sw string) int {
	return slices.IndexFunc(f.Host.Switches, func(s spec.Switch) bool { return s.Name == sw })
}

// vmIndex returns the index of VM name in the file.
func (f *File) vmIndex(name string) int {
	return slices.IndexFunc(f.Host.VMs, func(v spec.VM) bool { return v.Name == name })
}

// Addr returns the address (without prefix length) of VM vm's NIC nic,
// or of the host's TAP end of switch sw when vm is ClientHost.
func (f *File) Addr(vm string, sw string) string {
	s := f.switchIndex(sw)
	if vm == ClientHost {
		return fmt.Sprintf("10.77.%d.1", s)
	}
	return fmt.Sprintf("10.77.%d.%d", s, 10+f.vmIndex(vm))
}

// Phases returns the phase labels in run order: the isolated run (if
// any) first, then the policies.
func (f *File) Phases() []string {
	var out []string
	if f.Isolated != nil {
		out = append(out, IsolatedLabel)
	}
	for _, p := range f.Policies {
		out = append(out, p.Label)
	}
	return out
}

// IsolatedLabel is the isolated run's phase label.
const IsolatedLabel = "isolated"
