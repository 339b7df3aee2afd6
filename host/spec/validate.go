package spec

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// maxSpin bounds pollers.spin: a poller that spins longer than a second
// without a frame is a misconfiguration, not a latency choice.
const maxSpin = time.Second

// maxTxNoticeDelay bounds pollers.tx_notice_delay: a guest that waits
// longer for its transmit buffers stalls.
const maxTxNoticeDelay = 100 * time.Millisecond

// optionalDuration parses s, a duration from 0 to max, for the field at
// path; nil when the file leaves it out. example is a typical value for
// the error's hint.
func optionalDuration(path string, s scalar, example string, max time.Duration) (*time.Duration, *Error) {
	if !s.Set {
		return nil, nil
	}
	v, err := time.ParseDuration(strings.TrimSpace(s.Text))
	if err != nil {
		return nil, &Error{Path: path, Msg: fmt.Sprintf("%q: not a duration (use e.g. 0, 500us or %s)", s.Text, example)}
	}
	if v < 0 || v > max {
		return nil, &Error{Path: path, Msg: fmt.Sprintf("%q: must be from 0 to %v", s.Text, max)}
	}
	return &v, nil
}

// convert turns the decoded file into a File: it parses sizes, durations
// and MACs, resolves relative paths against baseDir, and rejects explicit
// values that Normalize would otherwise mistake for absent ones (cpus: 0,
// mem: 0).
func (r *rawFile) convert(baseDir string) (*File, *Error) {
	f := &File{}
	if r.Pollers != nil {
		f.Pollers.Cores = slices.Clip(append([]int(nil), r.Pollers.Cores...))
		var err *Error
		if f.Pollers.Spin, err = optionalDuration("pollers.spin", r.Pollers.Spin, "20ms", maxSpin); err != nil {
			return nil, err
		}
		if f.Pollers.TxNoticeDelay, err = optionalDuration("pollers.tx_notice_delay", r.Pollers.TxNoticeDelay, "2ms", maxTxNoticeDelay); err != nil {
			return nil, err
		}
	}
	if s := r.Sched; s != nil {
		f.Sched.Policy = s.Policy
		f.Sched.Cores = slices.Clip(append([]int(nil), s.Cores...))
		f.Sched.Mode = s.Mode
		f.Sched.FIFO = s.FIFO
		if s.CPU != nil {
			c := *s.CPU
			f.Sched.CPU = &c
		}
		for _, d := range []struct {
			name string
			raw  scalar
			out  *time.Duration
		}{
			{"threshold", s.Threshold, &f.Sched.Threshold},
			{"quantum", s.Quantum, &f.Sched.Quantum},
			{"grace", s.Grace, &f.Sched.Grace},
			{"period", s.Period, &f.Sched.Period},
		} {
			if !d.raw.Set {
				continue
			}
			v, err := time.ParseDuration(strings.TrimSpace(d.raw.Text))
			if err != nil {
				return nil, &Error{Path: "sched." + d.name, Msg: fmt.Sprintf("%q: not a duration (use e.g. 20us or 2ms)", d.raw.Text)}
			}
			if v <= 0 {
				return nil, &Error{Path: "sched." + d.name, Msg: fmt.Sprintf("%q: must be positive (omit it for the default)", d.raw.Text)}
			}
			*d.out = v
		}
	}
	for _, s := range r.Switches {
		sw := Switch{Name: s.Name}
		for _, u := range s.Uplinks {
			sw.Uplinks = append(sw.Uplinks, Uplink(u))
		}
		f.Switches = append(f.Switches, sw)
	}
	for i, v := range r.VMs {
		vm, err := v.convert(baseDir, fmt.Sprintf("vms[%d]", i))
		if err != nil {
			return nil, err
		}
		f.VMs = append(f.VMs, vm)
	}
	return f, nil
}

// convert turns one decoded VM into a VM; p is its path in the document
// ("" when the VM is the whole document).
func (v *rawVM) convert(baseDir, p string) (VM, *Error) {
	vm := VM{
		Name:     v.Name,
		Kernel:   resolve(baseDir, v.Kernel),
		Initrd:   resolve(baseDir, v.Initrd),
		Cmdline:  v.Cmdline,
		Append:   v.Append,
		Class:    v.Class,
		Console:  resolve(baseDir, v.Console),
		OnReboot: v.OnReboot,
		OnCrash:  v.OnCrash,
	}
	if v.CPUs != nil {
		vm.CPUs = *v.CPUs
		if msg := checkCPUs(vm.CPUs); msg != "" {
			return vm, &Error{Path: join(p, "cpus"), Msg: msg}
		}
	}
	if v.Mem.Set {
		n, err := ParseSize(v.Mem.Text)
		if err != nil {
			return vm, &Error{Path: join(p, "mem"), Msg: err.Error()}
		}
		if msg := checkMem(n); msg != "" {
			if isDigits(strings.TrimSpace(v.Mem.Text)) && n > 0 && n < MinMem && checkMem(n<<20) == "" {
				msg += fmt.Sprintf("; a plain number is bytes: did you mean %dM?", n)
			}
			return vm, &Error{Path: join(p, "mem"), Msg: msg}
		}
		vm.Mem = n
	}
	for _, d := range v.Disks {
		vm.Disks = append(vm.Disks, Disk{Path: resolve(baseDir, d.Path), ReadOnly: d.ReadOnly, OnError: d.OnError})
	}
	for j, n := range v.NICs {
		nic := NIC{Switch: n.Switch, NoOffloads: n.Offloads != nil && !*n.Offloads}
		if n.MAC != "" {
			mac, err := net.ParseMAC(strings.TrimSpace(n.MAC))
			if err != nil || len(mac) != 6 {
				return vm, &Error{Path: join(p, fmt.Sprintf("nics[%d].mac", j)), Msg: fmt.Sprintf("%q: not a MAC address (use e.g. 52:54:00:12:34:56)", n.MAC)}
			}
			nic.MAC = mac
		}
		vm.NICs = append(vm.NICs, nic)
	}
	return vm, nil
}

// join appends field to path p ("" is the top).
func join(p, field string) string {
	if p == "" {
		return field
	}
	return p + "." + field
}

func resolve(baseDir, p string) string {
	if p == "" || baseDir == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(baseDir, p)
}

// Normalize applies the defaults to the fields left zero: CPUs
// ([DefaultCPUs]), Mem ([DefaultMem]), Class ([DefaultClass]), Sched.Policy
// ([DefaultPolicy]), a NIC's Switch (the only switch, when exactly one is
// declared) and a NIC's MAC. A missing MAC becomes 52:54:00:xx:xx:xx with
// xx:xx:xx = (VM index+1)<<8 | NIC index, or the next free address after it
// when that one is taken: assigned MACs never repeat one the file names (or
// one assigned before). Normalize is idempotent; Parse calls it.
func (f *File) Normalize() {
	if f.Sched.Policy == "" {
		f.Sched.Policy = DefaultPolicy
	}
	if f.Sched.Mode == "" {
		f.Sched.Mode = DefaultSchedMode
	}
	used := map[uint64]bool{}
	for _, vm := range f.VMs {
		for _, n := range vm.NICs {
			if len(n.MAC) == 6 {
				used[macKey(n.MAC)] = true
			}
		}
	}
	for i := range f.VMs {
		vm := &f.VMs[i]
		vm.normalizeAlone()
		for j := range vm.NICs {
			n := &vm.NICs[j]
			if n.Switch == "" && len(f.Switches) == 1 {
				n.Switch = f.Switches[0].Name
			}
			if len(n.MAC) != 0 {
				continue
			}
			s := uint64(i+1)<<8 + uint64(j)
			for k := 0; k < 1<<24; k++ {
				key := 0x525400<<24 | (s+uint64(k))&0xffffff
				if !used[key] {
					used[key] = true
					n.MAC = net.HardwareAddr{0x52, 0x54, 0x00, byte(key >> 16), byte(key >> 8), byte(key)}
					break
				}
			}
		}
	}
}

// normalizeAlone applies the defaults that do not depend on other VMs.
func (vm *VM) normalizeAlone() {
	if vm.CPUs == 0 {
		vm.CPUs = DefaultCPUs
	}
	if vm.Mem == 0 {
		vm.Mem = DefaultMem
	}
	if vm.Class == "" {
		vm.Class = DefaultClass
	}
	if vm.OnReboot == "" {
		vm.OnReboot = DefaultOnReboot
	}
	if vm.OnCrash == "" {
		vm.OnCrash = DefaultOnCrash
	}
	for i := range vm.Disks {
		if vm.Disks[i].OnError == "" {
			vm.Disks[i].OnError = DiskReport
		}
	}
}

func macKey(m net.HardwareAddr) uint64 {
	var k uint64
	for _, b := range m {
		k = k<<8 | uint64(b)
	}
	return k
}

// Validate checks a normalized File: the same checks Parse makes, for a
// File built in Go. Its error is an [*Error] without a line.
func (f *File) Validate() error {
	if err := f.validate(true); err != nil {
		return err
	}
	return nil
}

// ValidateHost is Validate for host settings that may declare no VM.
func (f *File) ValidateHost() error {
	if err := f.validate(false); err != nil {
		return err
	}
	return nil
}

func (f *File) validate(needVMs bool) *Error {
	cores := map[int]string{}
	if err := checkCores("pollers.cores", f.Pollers.Cores, cores); err != nil {
		return err
	}
	s := f.Sched
	if !slices.Contains([]string{PolicyLinux, PolicyPinned, PolicyCentral, PolicyAdaptive}, s.Policy) {
		return &Error{Path: "sched.policy", Msg: fmt.Sprintf("%q: not a policy (use linux, pinned, central or adaptive)", s.Policy)}
	}
	if err := checkCores("sched.cores", s.Cores, cores); err != nil {
		return err
	}
	if !slices.Contains([]string{"adaptive", "busy-poll", "sleep"}, s.Mode) {
		return &Error{Path: "sched.mode", Msg: fmt.Sprintf("%q: not a mode (use adaptive, busy-poll or sleep)", s.Mode)}
	}
	if s.CPU != nil {
		switch c := *s.CPU; {
		case c < 0 || c > MaxCore:
			return &Error{Path: "sched.cpu", Msg: fmt.Sprintf("core %d: must be from 0 to %d", c, MaxCore)}
		case slices.Contains(s.Cores, c):
			return &Error{Path: "sched.cpu", Msg: fmt.Sprintf("core %d is also in sched.cores: the scheduler thread needs a core of its own", c)}
		}
	}
	if s.FIFO < 0 || s.FIFO > 99 {
		return &Error{Path: "sched.fifo", Msg: fmt.Sprintf("%d: a SCHED_FIFO priority is from 1 to 99 (0: not FIFO)", s.FIFO)}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"threshold", s.Threshold}, {"quantum", s.Quantum}, {"grace", s.Grace}, {"period", s.Period}} {
		switch {
		case d.v < 0:
			return &Error{Path: "sched." + d.name, Msg: fmt.Sprintf("%v: must be positive (omit it for the default)", d.v)}
		case d.v > 0 && s.Policy != PolicyCentral && d.name != "period":
			return &Error{Path: "sched." + d.name, Msg: fmt.Sprintf("only the central policy takes it, not %s", s.Policy)}
		}
	}

	switches := map[string]string{}
	ifaces := map[string]string{}
	for i, sw := range f.Switches {
		p := fmt.Sprintf("switches[%d]", i)
		if sw.Name == "" {
			return &Error{Path: p, Msg: "missing name"}
		}
		if msg := checkName(sw.Name); msg != "" {
			return &Error{Path: p + ".name", Msg: msg}
		}
		if prev, ok := switches[sw.Name]; ok {
			return &Error{Path: p + ".name", Msg: fmt.Sprintf("duplicate %q (also %s)", sw.Name, prev)}
		}
		switches[sw.Name] = p
		for j, u := range sw.Uplinks {
			up := fmt.Sprintf("%s.uplinks[%d]", p, j)
			kind, name := "tap", u.TAP
			switch {
			case u.TAP != "" && u.XDP != "":
				return &Error{Path: up, Msg: "set tap or xdp, not both (use two uplinks)"}
			case u.TAP == "" && u.XDP == "":
				return &Error{Path: up, Msg: "empty uplink (set tap or xdp)"}
			case u.XDP != "":
				kind, name = "xdp", u.XDP
			}
			if msg := checkIfname(name); msg != "" {
				return &Error{Path: up + "." + kind, Msg: msg}
			}
			if prev, ok := ifaces[name]; ok {
				return &Error{Path: up + "." + kind, Msg: fmt.Sprintf("duplicate interface %q (also %s)", name, prev)}
			}
			ifaces[name] = up + "." + kind
		}
	}

	if needVMs && len(f.VMs) == 0 {
		return &Error{Path: "vms", Msg: "no VMs (declare at least one)"}
	}
	set := newVMSet(f)
	for i, vm := range f.VMs {
		if err := set.add(fmt.Sprintf("vms[%d]", i), vm); err != nil {
			return err
		}
	}
	return nil
}

// Add checks vm against f — its switches and the VMs it has — applies the
// defaults (those that depend on the others too: a NIC's switch and MAC)
// and appends the result to f.VMs, which it also returns. f must be valid
// (normalized and validated). A refused VM leaves f as it was; the error
// is an [*Error] whose path starts at the VM (mem, nics[0].mac).
func (f *File) Add(vm VM) (VM, error) {
	cand := *f
	cand.VMs = append(slices.Clip(f.VMs), vm)
	cand.Normalize()
	set := newVMSet(&cand)
	n := len(f.VMs)
	for _, old := range cand.VMs[:n] {
		if err := set.add("", old); err != nil {
			return VM{}, fmt.Errorf("spec: the host's own VMs do not validate: %w", err)
		}
	}
	if err := set.add("", cand.VMs[n]); err != nil {
		return VM{}, err
	}
	f.VMs = cand.VMs
	return cand.VMs[n], nil
}

// Remove takes the VM named name out of f.VMs and reports whether there
// was one.
func (f *File) Remove(name string) bool {
	i := slices.IndexFunc(f.VMs, func(vm VM) bool { return vm.Name == name })
	if i < 0 {
		return false
	}
	f.VMs = slices.Delete(slices.Clone(f.VMs), i, i+1)
	return true
}

// vmSet checks VMs one after another against a host's switches and the
// VMs checked before them: unique names, MACs and consoles, and disks that
// are shared only read-only.
type vmSet struct {
	file     *File
	switches map[string]bool
	names    map[string]string
	macs     map[uint64]string
	disks    map[string]diskUse
	consoles map[string]string
}

type diskUse struct {
	path     string
	readOnly bool
}

func newVMSet(f *File) *vmSet {
	s := &vmSet{file: f, switches: map[string]bool{}, names: map[string]string{}, macs: map[uint64]string{},
		disks: map[string]diskUse{}, consoles: map[string]string{}}
	for _, sw := range f.Switches {
		s.switches[sw.Name] = true
	}
	return s
}

// where names a VM at path p in messages about a conflict with it.
func where(p, name string) string {
	if p == "" {
		return "VM " + name
	}
	return p
}

// add checks vm, at path p, and records what it uses.
func (s *vmSet) add(p string, vm VM) *Error {
	if err := vm.validateAlone(p); err != nil {
		return err
	}
	if prev, ok := s.names[vm.Name]; ok {
		return &Error{Path: join(p, "name"), Msg: fmt.Sprintf("duplicate %q (also %s)", vm.Name, prev)}
	}
	if vm.Console != "" {
		c := filepath.Clean(vm.Console)
		if prev, ok := s.consoles[c]; ok {
			return &Error{Path: join(p, "console"), Msg: fmt.Sprintf("%q is also %s's console", vm.Console, prev)}
		}
	}
	disks := map[string]diskUse{}
	for j, d := range vm.Disks {
		dp := join(p, fmt.Sprintf("disks[%d]", j))
		c := filepath.Clean(d.Path)
		prev, ok := s.disks[c]
		if !ok {
			prev, ok = disks[c]
		}
		if ok && !(prev.readOnly && d.ReadOnly) {
			return &Error{Path: dp + ".path", Msg: fmt.Sprintf("%q is also %s; a shared disk must be readonly everywhere", d.Path, prev.path)}
		}
		disks[c] = diskUse{join(where(p, vm.Name), fmt.Sprintf("disks[%d]", j)), d.ReadOnly}
	}
	macs := map[uint64]string{}
	for j, n := range vm.NICs {
		np := join(p, fmt.Sprintf("nics[%d]", j))
		sws := s.file.Switches
		if n.Switch == "" {
			if len(sws) == 0 {
				return &Error{Path: np, Msg: "missing switch (declare one under switches)"}
			}
			return &Error{Path: np, Msg: fmt.Sprintf("missing switch (one of %s)", switchList(sws))}
		}
		if !s.switches[n.Switch] {
			if len(sws) == 0 {
				return &Error{Path: np + ".switch", Msg: fmt.Sprintf("no switch named %q (no switches are declared)", n.Switch)}
			}
			return &Error{Path: np + ".switch", Msg: fmt.Sprintf("no switch named %q (have %s)", n.Switch, switchList(sws))}
		}
		if len(n.MAC) == 0 {
			continue // assigned by Normalize
		}
		k := macKey(n.MAC)
		prev, ok := s.macs[k]
		if !ok {
			prev, ok = macs[k]
		}
		if ok {
			return &Error{Path: np + ".mac", Msg: fmt.Sprintf("duplicate %s (also %s)", n.MAC, prev)}
		}
		macs[k] = np
	}
	// Recorded only once the whole VM is accepted.
	s.names[vm.Name] = where(p, vm.Name)
	if vm.Console != "" {
		s.consoles[filepath.Clean(vm.Console)] = where(p, vm.Name)
	}
	for c, u := range disks {
		s.disks[c] = u
	}
	for k, np := range macs {
		if p == "" {
			np = "VM " + vm.Name + " " + np
		}
		s.macs[k] = np
	}
	return nil
}

// validateAlone checks what a VM at path p must be whatever else the host
// has: its name, sizes, class, policies and the form of its paths and MACs.
func (vm *VM) validateAlone(p string) *Error {
	if vm.Name == "" {
		if p == "" {
			return &Error{Path: "name", Msg: "missing name"}
		}
		return &Error{Path: p, Msg: "missing name"}
	}
	if msg := checkName(vm.Name); msg != "" {
		return &Error{Path: join(p, "name"), Msg: msg}
	}
	for _, t := range []struct{ field, v string }{
		{"kernel", vm.Kernel}, {"initrd", vm.Initrd}, {"cmdline", vm.Cmdline},
		{"append", vm.Append}, {"console", vm.Console},
	} {
		if strings.IndexByte(t.v, 0) >= 0 {
			return &Error{Path: join(p, t.field), Msg: "contains a NUL byte"}
		}
	}
	// Zero values are the defaults Normalize fills in.
	if vm.CPUs != 0 {
		if msg := checkCPUs(vm.CPUs); msg != "" {
			return &Error{Path: join(p, "cpus"), Msg: msg}
		}
	}
	if vm.Mem != 0 {
		if msg := checkMem(vm.Mem); msg != "" {
			return &Error{Path: join(p, "mem"), Msg: msg}
		}
	}
	if vm.Class != "" && vm.Class != ClassLC && vm.Class != ClassBatch {
		return &Error{Path: join(p, "class"), Msg: fmt.Sprintf("%q: not a class (use lc or batch)", vm.Class)}
	}
	for _, t := range []struct{ field, v string }{{"on_reboot", vm.OnReboot}, {"on_crash", vm.OnCrash}} {
		if t.v != "" && t.v != ActionStop && t.v != ActionRestart {
			return &Error{Path: join(p, t.field), Msg: fmt.Sprintf("%q: use stop or restart", t.v)}
		}
	}
	for j, d := range vm.Disks {
		dp := join(p, fmt.Sprintf("disks[%d]", j))
		if d.Path == "" {
			return &Error{Path: dp, Msg: "missing path"}
		}
		if strings.IndexByte(d.Path, 0) >= 0 {
			return &Error{Path: dp + ".path", Msg: "contains a NUL byte"}
		}
		if d.OnError != "" && d.OnError != DiskReport && d.OnError != ActionStop {
			return &Error{Path: dp + ".on_error", Msg: fmt.Sprintf("%q: use report or stop", d.OnError)}
		}
	}
	for j, n := range vm.NICs {
		if len(n.MAC) == 0 {
			continue
		}
		if msg := checkMAC(n.MAC); msg != "" {
			return &Error{Path: join(p, fmt.Sprintf("nics[%d].mac", j)), Msg: msg}
		}
	}
	return nil
}

func switchList(sws []Switch) string {
	var names []string
	for _, s := range sws {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}

// checkCores checks a core list, recording each core's path in seen.
func checkCores(path string, cores []int, seen map[int]string) *Error {
	for i, c := range cores {
		p := fmt.Sprintf("%s[%d]", path, i)
		if c < 0 {
			return &Error{Path: p, Msg: fmt.Sprintf("negative core %d", c)}
		}
		if c > MaxCore {
			return &Error{Path: p, Msg: fmt.Sprintf("core %d is beyond %d", c, MaxCore)}
		}
		if prev, ok := seen[c]; ok {
			if strings.HasPrefix(prev, path+"[") {
				return &Error{Path: p, Msg: fmt.Sprintf("duplicate core %d (also %s)", c, prev)}
			}
			return &Error{Path: p, Msg: fmt.Sprintf("core %d is also %s: a core runs pollers or scheduled vCPUs, not both", c, prev)}
		}
		seen[c] = p
	}
	return nil
}

// checkName says what is wrong with a VM or switch name, or "".
func checkName(s string) string {
	if len(s) > MaxNameLen {
		return fmt.Sprintf("%q is longer than %d bytes (names become TAP and port names)", s, MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 {
			continue
		}
		return fmt.Sprintf("%q: use lowercase letters, digits and '-', starting with a letter or digit", s)
	}
	return ""
}

// checkIfname says what is wrong with a host interface name, or "".
func checkIfname(s string) string {
	if len(s) > MaxNameLen {
		return fmt.Sprintf("%q is longer than %d bytes (the kernel's limit)", s, MaxNameLen)
	}
	if s == "." || s == ".." || strings.ContainsFunc(s, func(r rune) bool {
		return r == '/' || r == ':' || r == 0 || unicode.IsSpace(r)
	}) {
		return fmt.Sprintf("%q: not an interface name (no '/', ':' or spaces)", s)
	}
	return ""
}

func checkCPUs(n int) string {
	if n < 1 || n > MaxCPUs {
		return fmt.Sprintf("%d: must be from 1 to %d", n, MaxCPUs)
	}
	return ""
}

func checkMem(n uint64) string {
	switch {
	case n < MinMem:
		return fmt.Sprintf("%s is too small (at least %s)", FormatSize(n), FormatSize(MinMem))
	case n > MaxMem:
		return fmt.Sprintf("%s is too large (at most %s)", FormatSize(n), FormatSize(MaxMem))
	case n%4096 != 0:
		return fmt.Sprintf("%s is not a multiple of 4K", FormatSize(n))
	}
	return ""
}

func checkMAC(m net.HardwareAddr) string {
	switch {
	case len(m) != 6:
		return fmt.Sprintf("%q: not a MAC address (use e.g. 52:54:00:12:34:56)", m.String())
	case m[0]&1 != 0:
		return fmt.Sprintf("%s is a multicast address (the first byte must be even, e.g. 52:54:00:12:34:56)", m)
	case macKey(m) == 0:
		return fmt.Sprintf("%s is not a usable address", m)
	}
	return ""
}

var sizeUnits = map[string]uint{
	"": 0, "b": 0,
	"k": 10, "kb": 10, "kib": 10,
	"m": 20, "mb": 20, "mib": 20,
	"g": 30, "gb": 30, "gib": 30,
	"t": 40, "tb": 40, "tib": 40,
}

// ParseSize parses a size in bytes: a whole number, optionally followed by
// a unit K, M, G or T (powers of 1024, written also KB, KiB, ...; any
// case). A plain number is bytes.
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	shift, ok := sizeUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if i == 0 || !ok {
		return 0, fmt.Errorf("%q: not a size (use e.g. 256M or 1G)", s)
	}
	n, err := strconv.ParseUint(t[:i], 10, 64)
	if err != nil || n > (1<<64-1)>>shift {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return n << shift, nil
}

// FormatSize writes n with the largest unit that divides it: 256M, 1G,
// 12345 bytes.
func FormatSize(n uint64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "T"}, {30, "G"}, {20, "M"}, {10, "K"}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + u.name
		}
	}
	return strconv.FormatUint(n, 10) + " bytes"
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
