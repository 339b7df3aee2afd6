package upfile

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

// convert turns the decoded file into a File: it parses sizes, durations
// and MACs, resolves relative paths against baseDir, and rejects explicit
// values that Normalize would otherwise mistake for absent ones (cpus: 0,
// mem: 0).
func (r *rawFile) convert(baseDir string) (*File, *Error) {
	f := &File{}
	if r.Pollers != nil {
		f.Pollers.Cores = slices.Clip(append([]int(nil), r.Pollers.Cores...))
	}
	if s := r.Sched; s != nil {
		f.Sched.Policy = s.Policy
		f.Sched.Cores = slices.Clip(append([]int(nil), s.Cores...))
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
		p := fmt.Sprintf("vms[%d]", i)
		vm := VM{
			Name:    v.Name,
			Kernel:  resolve(baseDir, v.Kernel),
			Initrd:  resolve(baseDir, v.Initrd),
			Cmdline: v.Cmdline,
			Append:  v.Append,
			Class:   v.Class,
			Console: resolve(baseDir, v.Console),
		}
		if v.CPUs != nil {
			vm.CPUs = *v.CPUs
			if msg := checkCPUs(vm.CPUs); msg != "" {
				return nil, &Error{Path: p + ".cpus", Msg: msg}
			}
		}
		if v.Mem.Set {
			n, err := ParseSize(v.Mem.Text)
			if err != nil {
				return nil, &Error{Path: p + ".mem", Msg: err.Error()}
			}
			if msg := checkMem(n); msg != "" {
				if isDigits(strings.TrimSpace(v.Mem.Text)) && n > 0 && n < MinMem && checkMem(n<<20) == "" {
					msg += fmt.Sprintf("; a plain number is bytes: did you mean %dM?", n)
				}
				return nil, &Error{Path: p + ".mem", Msg: msg}
			}
			vm.Mem = n
		}
		for _, d := range v.Disks {
			vm.Disks = append(vm.Disks, Disk{Path: resolve(baseDir, d.Path), ReadOnly: d.ReadOnly})
		}
		for j, n := range v.NICs {
			nic := NIC{Switch: n.Switch, NoOffloads: n.Offloads != nil && !*n.Offloads}
			if n.MAC != "" {
				mac, err := net.ParseMAC(strings.TrimSpace(n.MAC))
				if err != nil || len(mac) != 6 {
					return nil, &Error{Path: fmt.Sprintf("%s.nics[%d].mac", p, j), Msg: fmt.Sprintf("%q: not a MAC address (use e.g. 52:54:00:12:34:56)", n.MAC)}
				}
				nic.MAC = mac
			}
			vm.NICs = append(vm.NICs, nic)
		}
		f.VMs = append(f.VMs, vm)
	}
	return f, nil
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
		if vm.CPUs == 0 {
			vm.CPUs = DefaultCPUs
		}
		if vm.Mem == 0 {
			vm.Mem = DefaultMem
		}
		if vm.Class == "" {
			vm.Class = DefaultClass
		}
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
	if err := f.validate(); err != nil {
		return err
	}
	return nil
}

func (f *File) validate() *Error {
	cores := map[int]string{}
	if err := checkCores("pollers.cores", f.Pollers.Cores, cores); err != nil {
		return err
	}
	s := f.Sched
	if !slices.Contains([]string{PolicyLinux, PolicyPinned, PolicyCentral}, s.Policy) {
		return &Error{Path: "sched.policy", Msg: fmt.Sprintf("%q: not a policy (use linux, pinned or central)", s.Policy)}
	}
	if err := checkCores("sched.cores", s.Cores, cores); err != nil {
		return err
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

	if len(f.VMs) == 0 {
		return &Error{Path: "vms", Msg: "no VMs (declare at least one)"}
	}
	names := map[string]string{}
	macs := map[uint64]string{}
	type diskUse struct {
		path     string
		readOnly bool
	}
	disks := map[string]diskUse{}
	consoles := map[string]string{}
	for i, vm := range f.VMs {
		p := fmt.Sprintf("vms[%d]", i)
		if vm.Name == "" {
			return &Error{Path: p, Msg: "missing name"}
		}
		if msg := checkName(vm.Name); msg != "" {
			return &Error{Path: p + ".name", Msg: msg}
		}
		if prev, ok := names[vm.Name]; ok {
			return &Error{Path: p + ".name", Msg: fmt.Sprintf("duplicate %q (also %s)", vm.Name, prev)}
		}
		names[vm.Name] = p
		for _, t := range []struct{ field, v string }{
			{"kernel", vm.Kernel}, {"initrd", vm.Initrd}, {"cmdline", vm.Cmdline},
			{"append", vm.Append}, {"console", vm.Console},
		} {
			if strings.IndexByte(t.v, 0) >= 0 {
				return &Error{Path: p + "." + t.field, Msg: "contains a NUL byte"}
			}
		}
		if msg := checkCPUs(vm.CPUs); msg != "" {
			return &Error{Path: p + ".cpus", Msg: msg}
		}
		if msg := checkMem(vm.Mem); msg != "" {
			return &Error{Path: p + ".mem", Msg: msg}
		}
		if vm.Class != ClassLC && vm.Class != ClassBatch {
			return &Error{Path: p + ".class", Msg: fmt.Sprintf("%q: not a class (use lc or batch)", vm.Class)}
		}
		if vm.Console != "" {
			c := filepath.Clean(vm.Console)
			if prev, ok := consoles[c]; ok {
				return &Error{Path: p + ".console", Msg: fmt.Sprintf("%q is also %s's console", vm.Console, prev)}
			}
			consoles[c] = p
		}
		for j, d := range vm.Disks {
			dp := fmt.Sprintf("%s.disks[%d]", p, j)
			if d.Path == "" {
				return &Error{Path: dp, Msg: "missing path"}
			}
			if strings.IndexByte(d.Path, 0) >= 0 {
				return &Error{Path: dp + ".path", Msg: "contains a NUL byte"}
			}
			c := filepath.Clean(d.Path)
			if prev, ok := disks[c]; ok && !(prev.readOnly && d.ReadOnly) {
				return &Error{Path: dp + ".path", Msg: fmt.Sprintf("%q is also %s; a shared disk must be readonly everywhere", d.Path, prev.path)}
			}
			disks[c] = diskUse{dp, d.ReadOnly}
		}
		for j, n := range vm.NICs {
			np := fmt.Sprintf("%s.nics[%d]", p, j)
			if n.Switch == "" {
				if len(f.Switches) == 0 {
					return &Error{Path: np, Msg: "missing switch (declare one under switches)"}
				}
				return &Error{Path: np, Msg: fmt.Sprintf("missing switch (one of %s)", switchList(f.Switches))}
			}
			if _, ok := switches[n.Switch]; !ok {
				if len(f.Switches) == 0 {
					return &Error{Path: np + ".switch", Msg: fmt.Sprintf("no switch named %q (no switches are declared)", n.Switch)}
				}
				return &Error{Path: np + ".switch", Msg: fmt.Sprintf("no switch named %q (have %s)", n.Switch, switchList(f.Switches))}
			}
			if len(n.MAC) == 0 {
				continue // assigned by Normalize
			}
			if msg := checkMAC(n.MAC); msg != "" {
				return &Error{Path: np + ".mac", Msg: msg}
			}
			k := macKey(n.MAC)
			if prev, ok := macs[k]; ok {
				return &Error{Path: np + ".mac", Msg: fmt.Sprintf("duplicate %s (also %s)", n.MAC, prev)}
			}
			macs[k] = np
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
