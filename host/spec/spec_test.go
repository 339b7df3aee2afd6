package spec

import (
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/colibrivm/colibri/internal/testenv"
)

func TestGoodYAMLAndJSONAgree(t *testing.T) {
	y, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j, err := Load("testdata/good.json")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(y, j) {
		t.Fatalf("YAML and JSON differ:\nyaml %+v\njson %+v", y, j)
	}
	dir, _ := filepath.Abs("testdata")
	mac := func(s string) net.HardwareAddr {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	spin, txDelay := 500*time.Microsecond, 2*time.Millisecond
	want := &File{
		Pollers: Pollers{Cores: []int{1}, Spin: &spin, TxNoticeDelay: &txDelay},
		Sched:   Sched{Policy: "central", Cores: []int{0, 2}, Threshold: 20 * time.Microsecond, Quantum: 2 * time.Millisecond, Mode: "adaptive"},
		Switches: []Switch{
			{Name: "sw0", Uplinks: []Uplink{{TAP: "tap0"}, {XDP: "veth0"}}},
			{Name: "sw1"},
		},
		VMs: []VM{{
			Name:     "a",
			Kernel:   filepath.Join(dir, "images/bzImage"),
			Initrd:   "/abs/initrd",
			Cmdline:  "console=ttyS0 quiet rdinit=/init",
			Append:   "loglevel=4",
			CPUs:     2,
			Mem:      512 << 20,
			Class:    "lc",
			Disks:    []Disk{{Path: filepath.Join(dir, "a.img"), OnError: "stop"}, {Path: filepath.Join(dir, "shared.img"), ReadOnly: true, OnError: "report"}},
			NICs:     []NIC{{Switch: "sw0", MAC: mac("52:54:00:00:00:0a")}, {Switch: "sw1", MAC: mac("52:54:00:00:01:01")}},
			Console:  filepath.Join(dir, "logs/a.log"),
			OnReboot: "restart", OnCrash: "stop",
		}, {
			Name:     "b-2",
			CPUs:     1,
			Mem:      1 << 30,
			Class:    "batch",
			Disks:    []Disk{{Path: filepath.Join(dir, "shared.img"), ReadOnly: true, OnError: "report"}},
			NICs:     []NIC{{Switch: "sw0", MAC: mac("52:54:00:00:02:00"), NoOffloads: true}},
			OnReboot: "stop", OnCrash: "restart",
		}, {
			Name:     "c",
			CPUs:     1,
			Mem:      256 << 20,
			Class:    "batch",
			OnReboot: "stop", OnCrash: "stop",
		}},
	}
	if !reflect.DeepEqual(y, want) {
		t.Fatalf("got  %+v\nwant %+v", y, want)
	}
}

func TestDefaults(t *testing.T) {
	f, err := Parse([]byte("vms: [{name: a, nics: [{}]}]\nswitches: [{name: sw}]\n"), Auto, "")
	if err != nil {
		t.Fatal(err)
	}
	vm := f.VMs[0]
	if f.Sched.Policy != "linux" || vm.CPUs != 1 || vm.Mem != 256<<20 || vm.Class != "batch" ||
		vm.NICs[0].Switch != "sw" || vm.NICs[0].MAC.String() != "52:54:00:00:01:00" || vm.Kernel != "" {
		t.Fatalf("defaults not applied: %+v %+v", f.Sched, vm)
	}
}

// An assigned MAC steps over the ones the file names.
func TestAutoMACAvoidsExplicit(t *testing.T) {
	f, err := Parse([]byte(`
switches: [{name: sw}]
vms:
  - {name: a, nics: [{}, {}]}
  - {name: b, nics: [{mac: "52:54:00:00:01:00"}, {mac: "52:54:00:00:01:01"}, {mac: "52:54:00:00:01:02"}]}
`), YAML, "")
	if err != nil {
		t.Fatal(err)
	}
	got := []string{f.VMs[0].NICs[0].MAC.String(), f.VMs[0].NICs[1].MAC.String()}
	want := []string{"52:54:00:00:01:03", "52:54:00:00:01:04"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("assigned %v, want %v", got, want)
	}
}

// YAML anchors, aliases and merge keys work, and what they bring in is
// checked like the rest.
func TestYAMLMerge(t *testing.T) {
	f, err := Parse([]byte(`
vms:
  - &base {name: a, mem: 1G, cpus: 2}
  - <<: *base
    name: b
`), YAML, "")
	if err != nil {
		t.Fatal(err)
	}
	if b := f.VMs[1]; b.Name != "b" || b.Mem != 1<<30 || b.CPUs != 2 {
		t.Fatalf("merge: %+v", b)
	}
	_, err = Parse([]byte(`
switches: [{name: s, uplinks: &u [{tap: t}]}, {name: r, uplinks: *u}]
vms: [{name: a}]
`), YAML, "")
	if err == nil || !strings.Contains(err.Error(), `line 2: switches[1].uplinks[0].tap: duplicate interface "t"`) {
		t.Fatalf("got %v", err)
	}
	_, err = Parse([]byte("vms: [&v {name: a, cpus: 1}, {name: b, mem: *v}]\n"), YAML, "")
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("alias of the wrong kind: %v", err)
	}
	t.Log(err)
}

func TestSniff(t *testing.T) {
	for _, c := range []struct {
		data string
		want Format
	}{
		{`{"vms": []}`, JSON},
		{` {vms: []}`, YAML},
		{"vms: []", YAML},
		{"", YAML},
	} {
		if got := sniff([]byte(c.data)); got != c.want {
			t.Errorf("sniff(%q) = %v, want %v", c.data, got, c.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]uint64{
		"256M": 256 << 20, "1G": 1 << 30, "512MiB": 512 << 20, "268435456": 256 << 20,
		"4k": 4096, "2 GB": 2 << 30, "1T": 1 << 40, "0": 0, "16b": 16,
	} {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "M", "12Q", "1.5G", "-1G", "1G1", "99999999999T", "0x10"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) succeeded", s)
		}
	}
}

const okVM = "vms: [{name: a}]\n"

var badFiles = []struct {
	name, data string
	format     Format
	want       string
}{
	// Syntax and shape.
	{"empty", "", YAML, "empty file"},
	{"comments only", "# nothing\n", YAML, "empty file"},
	{"yaml syntax", "vms: [\n", YAML, "line 1: did not find expected node content"},
	{"two documents", okVM + "---\nvms: []\n", YAML, "line 2: a second YAML document"},
	{"trailing garbage", okVM + "]]\n", YAML, "did not find expected key"},
	{"not a mapping", "- a\n", YAML, "line 1: want a mapping, got a list"},
	{"unknown key", okVM + "polers: {cores: [1]}\n", YAML, `line 2: polers: unknown key "polers" (known: pollers, sched, switches, vms)`},
	{"unknown vm key", "vms:\n  - name: a\n    memory: 1G\n", YAML, `line 3: vms[0].memory: unknown key "memory"`},
	{"unknown uplink key", okVM + "switches: [{name: s, uplinks: [{tun: x}]}]\n", YAML, `switches[0].uplinks[0].tun: unknown key "tun"`},
	{"duplicate key", "vms:\n  - name: a\n    name: b\n", YAML, "line 3: vms[0].name: duplicate key (also line 2)"},
	{"wrong kind", "vms:\n  - name: a\n    cpus: two\n", YAML, `line 3: vms[0].cpus: want an integer, got "two"`},
	{"list wanted", "vms: {name: a}\n", YAML, "vms: want a list, got a mapping"},
	{"duplicate root key", okVM + "vms: [{name: a, disks: [{path: x, readonly: yes}]}]\n", YAML, "duplicate key"},
	{"readonly yes", "vms: [{name: a, disks: [{path: x, readonly: yes}]}]\n", YAML, `vms[0].disks[0].readonly: want true or false, got "yes"`},
	{"mem list", "vms: [{name: a, mem: [1]}]\n", YAML, "vms[0].mem: want a string or number, got a list"},
	{"json syntax", `{"vms": [}`, JSON, "line 1: invalid character '}'"},
	{"json trailing", "{\"vms\": [{\"name\": \"a\"}]}\n{}", JSON, "line 2: trailing data after the JSON object"},
	{"json unknown key", "{\"vms\": [{\"name\": \"a\",\n \"Memory\": \"1G\"}]}", JSON, `line 2: vms[0].Memory: unknown key "Memory"`},
	{"json wrong case", `{"VMs": [{"name": "a"}]}`, JSON, `VMs: unknown key "VMs"`},
	{"json duplicate key", `{"vms": [{"name": "a", "name": "b"}]}`, JSON, "vms[0].name: duplicate key"},
	{"json string for int", `{"vms": [{"name": "a", "cpus": "2"}]}`, JSON, `vms[0].cpus: want an integer, got "2"`},
	{"json number for string", `{"vms": [{"name": 1}]}`, JSON, `vms[0].name: want a string, got "1"`},
	{"json float cpus", `{"vms": [{"name": "a", "cpus": 1.5}]}`, JSON, `vms[0].cpus: want an integer, got "1.5"`},

	// VMs.
	{"no vms", "pollers: {cores: [1]}\n", YAML, "vms: no VMs (declare at least one)"},
	{"empty vms", "vms: []\n", YAML, "vms: no VMs"},
	{"missing name", "vms:\n  - cpus: 1\n", YAML, "line 2: vms[0]: missing name"},
	{"bad name", "vms: [{name: A}]\n", YAML, `vms[0].name: "A": use lowercase letters, digits and '-'`},
	{"name starts with dash", "vms: [{name: -a}]\n", YAML, `vms[0].name: "-a": use lowercase`},
	{"long name", "vms: [{name: abcdefghijklmnop}]\n", YAML, `vms[0].name: "abcdefghijklmnop" is longer than 15 bytes`},
	{"duplicate name", "vms:\n- name: a\n- name: b\n- name: a\n", YAML, `line 4: vms[2].name: duplicate "a" (also vms[0])`},
	{"bad mem", "vms: [{name: a}, {name: b, mem: 12Q}]\n", YAML, `vms[1].mem: "12Q": not a size (use e.g. 256M or 1G)`},
	{"mem too small", "vms: [{name: a, mem: 16M}]\n", YAML, "vms[0].mem: 16M is too small (at least 32M)"},
	{"mem plain bytes", "vms: [{name: a, mem: 256}]\n", YAML, "256 bytes is too small (at least 32M); a plain number is bytes: did you mean 256M?"},
	{"mem zero", "vms: [{name: a, mem: 0}]\n", YAML, "vms[0].mem: 0 bytes is too small"},
	{"mem absurd", "vms: [{name: a, mem: 2T}]\n", YAML, "vms[0].mem: 2T is too large (at most 1T)"},
	{"mem overflow", "vms: [{name: a, mem: 99999999999999T}]\n", YAML, `vms[0].mem: "99999999999999T": too large`},
	{"mem unaligned", "vms: [{name: a, mem: 33554433}]\n", YAML, "vms[0].mem: 33554433 bytes is not a multiple of 4K"},
	{"cpus zero", "vms: [{name: a, cpus: 0}]\n", YAML, "vms[0].cpus: 0: must be from 1 to 255"},
	{"cpus negative", "vms: [{name: a, cpus: -1}]\n", YAML, "vms[0].cpus: -1: must be from 1 to 255"},
	{"cpus too many", "vms: [{name: a, cpus: 256}]\n", YAML, "vms[0].cpus: 256: must be from 1 to 255"},
	{"bad class", "vms: [{name: a, class: realtime}]\n", YAML, `vms[0].class: "realtime": not a class (use lc or batch)`},
	{"disk without path", "vms: [{name: a, disks: [{readonly: true}]}]\n", YAML, "vms[0].disks[0]: missing path"},
	{"shared writable disk", "vms: [{name: a, disks: [{path: x.img}]}, {name: b, disks: [{path: x.img, readonly: true}]}]\n", YAML,
		`vms[1].disks[0].path: "x.img" is also vms[0].disks[0]; a shared disk must be readonly everywhere`},
	{"shared console", "vms: [{name: a, console: c.log}, {name: b, console: ./c.log}]\n", YAML, `vms[1].console: "./c.log" is also vms[0]'s console`},
	{"nul in cmdline", `{"vms": [{"name": "a", "cmdline": "a\u0000b"}]}`, JSON, "vms[0].cmdline: contains a NUL byte"},

	// NICs.
	{"unknown switch", "switches: [{name: sw0}]\nvms: [{name: a, nics: [{switch: sw9}]}]\n", YAML, `vms[0].nics[0].switch: no switch named "sw9" (have sw0)`},
	{"no switches", "vms: [{name: a, nics: [{switch: sw9}]}]\n", YAML, `vms[0].nics[0].switch: no switch named "sw9" (no switches are declared)`},
	{"nic without switch", "switches: [{name: s1}, {name: s2}]\nvms: [{name: a, nics: [{}]}]\n", YAML, "vms[0].nics[0]: missing switch (one of s1, s2)"},
	{"nic without any switch", "vms: [{name: a, nics: [{}]}]\n", YAML, "vms[0].nics[0]: missing switch (declare one under switches)"},
	{"bad mac", "switches: [{name: s}]\nvms: [{name: a, nics: [{mac: 52:54:00:00:00}]}]\n", YAML, `vms[0].nics[0].mac: "52:54:00:00:00": not a MAC address`},
	{"long mac", "switches: [{name: s}]\nvms: [{name: a, nics: [{mac: \"00:00:00:00:fe:80:00:00\"}]}]\n", YAML, "not a MAC address"},
	{"multicast mac", "switches: [{name: s}]\nvms: [{name: a, nics: [{mac: \"01:00:5e:00:00:01\"}]}]\n", YAML, "vms[0].nics[0].mac: 01:00:5e:00:00:01 is a multicast address"},
	{"broadcast mac", "switches: [{name: s}]\nvms: [{name: a, nics: [{mac: \"ff:ff:ff:ff:ff:ff\"}]}]\n", YAML, "is a multicast address"},
	{"zero mac", "switches: [{name: s}]\nvms: [{name: a, nics: [{mac: \"00:00:00:00:00:00\"}]}]\n", YAML, "00:00:00:00:00:00 is not a usable address"},
	{"duplicate mac", "switches: [{name: s}]\nvms:\n- {name: a, nics: [{mac: \"52:54:00:00:00:0a\"}]}\n- {name: b, nics: [{mac: \"52:54:00:00:00:0A\"}]}\n", YAML,
		"line 4: vms[1].nics[0].mac: duplicate 52:54:00:00:00:0a (also vms[0].nics[0])"},

	// Switches.
	{"switch without name", okVM + "switches: [{uplinks: [{tap: t}]}]\n", YAML, "switches[0]: missing name"},
	{"bad switch name", okVM + "switches: [{name: sw_0}]\n", YAML, `switches[0].name: "sw_0": use lowercase`},
	{"duplicate switch", okVM + "switches: [{name: s}, {name: s}]\n", YAML, `switches[1].name: duplicate "s" (also switches[0])`},
	{"uplink both", okVM + "switches: [{name: s, uplinks: [{tap: t, xdp: v}]}]\n", YAML, "switches[0].uplinks[0]: set tap or xdp, not both"},
	{"uplink neither", okVM + "switches: [{name: s, uplinks: [{}]}]\n", YAML, "switches[0].uplinks[0]: empty uplink (set tap or xdp)"},
	{"bad tap name", okVM + "switches: [{name: s, uplinks: [{tap: a/b}]}]\n", YAML, `switches[0].uplinks[0].tap: "a/b": not an interface name`},
	{"long xdp name", okVM + "switches: [{name: s, uplinks: [{xdp: averyveryverylongname}]}]\n", YAML, "switches[0].uplinks[0].xdp: \"averyveryverylongname\" is longer than 15 bytes"},
	{"duplicate tap", okVM + "switches: [{name: s, uplinks: [{tap: t}]}, {name: r, uplinks: [{tap: t}]}]\n", YAML, `switches[1].uplinks[0].tap: duplicate interface "t" (also switches[0].uplinks[0].tap)`},

	// Cores and the scheduler.
	{"bad policy", okVM + "sched: {policy: cfs}\n", YAML, `sched.policy: "cfs": not a policy (use linux, pinned, central or adaptive)`},
	{"negative core", okVM + "pollers: {cores: [-1]}\n", YAML, "pollers.cores[0]: negative core -1"},
	{"huge core", okVM + "sched: {cores: [4096]}\n", YAML, "sched.cores[0]: core 4096 is beyond 1023"},
	{"duplicate poller core", okVM + "pollers: {cores: [3, 3]}\n", YAML, "pollers.cores[1]: duplicate core 3 (also pollers.cores[0])"},
	{"duplicate sched core", okVM + "sched: {cores: [0, 1, 0]}\n", YAML, "sched.cores[2]: duplicate core 0 (also sched.cores[0])"},
	{"core shared", okVM + "pollers: {cores: [1]}\nsched: {policy: central, cores: [0, 1]}\n", YAML, "sched.cores[1]: core 1 is also pollers.cores[0]: a core runs pollers or scheduled vCPUs, not both"},
	{"bad duration", okVM + "sched: {policy: central, quantum: 2x}\n", YAML, `sched.quantum: "2x": not a duration (use e.g. 20us or 2ms)`},
	{"spin without unit", okVM + "pollers: {spin: 5}\n", YAML, `pollers.spin: "5": not a duration (use e.g. 0, 500us or 20ms)`},
	{"negative spin", okVM + "pollers: {spin: -1ms}\n", YAML, `pollers.spin: "-1ms": must be from 0 to 1s`},
	{"tx notice delay without unit", okVM + "pollers: {tx_notice_delay: 3}\n", YAML, `pollers.tx_notice_delay: "3": not a duration (use e.g. 0, 500us or 2ms)`},
	{"tx notice delay too long", okVM + "pollers: {tx_notice_delay: 1s}\n", YAML, `pollers.tx_notice_delay: "1s": must be from 0 to 100ms`},
	{"negative tx notice delay", okVM + "pollers: {tx_notice_delay: -1us}\n", YAML, `pollers.tx_notice_delay: "-1us": must be from 0 to 100ms`},
	{"spin too long", `{"vms": [{"name": "a"}], "pollers": {"spin": "2s"}}`, JSON, `pollers.spin: "2s": must be from 0 to 1s`},
	{"zero duration", okVM + "sched: {policy: central, grace: 0s}\n", YAML, `sched.grace: "0s": must be positive`},
	{"param without central", okVM + "sched: {policy: pinned, threshold: 20us}\n", YAML, "sched.threshold: only the central policy takes it, not pinned"},
	{"param with default policy", okVM + "sched: {quantum: 1ms}\n", YAML, "sched.quantum: only the central policy takes it, not linux"},
	{"bad mode", okVM + "sched: {mode: spin}\n", YAML, `sched.mode: "spin": not a mode (use adaptive, busy-poll or sleep)`},
	{"sched cpu managed", okVM + "sched: {cores: [0, 1], cpu: 1}\n", YAML, "sched.cpu: core 1 is also in sched.cores: the scheduler thread needs a core of its own"},
	{"sched cpu negative", okVM + "sched: {cpu: -3}\n", YAML, "sched.cpu: core -3: must be from 0 to 1023"},
	{"bad disk policy", "vms: [{name: a, disks: [{path: d.img, on_error: retry}]}]\n", YAML, `vms[0].disks[0].on_error: "retry": use report or stop`},
	{"bad fifo", okVM + "sched: {fifo: 120}\n", YAML, "sched.fifo: 120: a SCHED_FIFO priority is from 1 to 99 (0: not FIFO)"},
}

func TestBadFiles(t *testing.T) {
	for _, c := range badFiles {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse([]byte(c.data), c.format, "")
			if err == nil {
				t.Fatalf("accepted: %+v", f)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.want) {
				t.Fatalf("error %q does not contain %q", msg, c.want)
			}
			if strings.Contains(msg, "\n") || strings.Contains(msg, "upfile.") || strings.Contains(msg, "raw") {
				t.Fatalf("error %q is not one clean line", msg)
			}
		})
	}
}

func TestLoadNamesFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "up.yml")
	writeFile(t, p, "vms:\n  - name: a\n    mem: 12Q\n")
	_, err := Load(p)
	if err == nil || err.Error() != p+`:3: vms[0].mem: "12Q": not a size (use e.g. 256M or 1G)` {
		t.Fatalf("got %v", err)
	}
	// A .json file is JSON even if it would parse as YAML.
	p = filepath.Join(dir, "up.json")
	writeFile(t, p, "vms: [{name: a}]\n")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "invalid character") {
		t.Fatalf("got %v", err)
	}
	if _, err := Load(filepath.Join(dir, "absent.yaml")); err == nil {
		t.Fatal("absent file loaded")
	}
}

func TestValidateProgrammatic(t *testing.T) {
	f := &File{VMs: []VM{{Name: "a"}}}
	f.Normalize()
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	f.VMs[0].CPUs = 300
	if err := f.Validate(); err == nil || err.Error() != "vms[0].cpus: 300: must be from 1 to 255" {
		t.Fatalf("got %v", err)
	}
}

// toRaw writes a File back in the schema, every default explicit.
func toRaw(f *File) *rawFile {
	r := &rawFile{
		Pollers: &rawPollers{Cores: f.Pollers.Cores},
		Sched:   &rawSched{Policy: f.Sched.Policy, Cores: f.Sched.Cores, Mode: f.Sched.Mode, CPU: f.Sched.CPU, FIFO: f.Sched.FIFO},
	}
	if f.Pollers.Spin != nil {
		r.Pollers.Spin = scalar{Text: f.Pollers.Spin.String(), Set: true}
	}
	if f.Pollers.TxNoticeDelay != nil {
		r.Pollers.TxNoticeDelay = scalar{Text: f.Pollers.TxNoticeDelay.String(), Set: true}
	}
	for _, d := range []struct {
		v   time.Duration
		out *scalar
	}{{f.Sched.Threshold, &r.Sched.Threshold}, {f.Sched.Quantum, &r.Sched.Quantum}, {f.Sched.Grace, &r.Sched.Grace}, {f.Sched.Period, &r.Sched.Period}} {
		if d.v != 0 {
			*d.out = scalar{Text: d.v.String(), Set: true}
		}
	}
	for _, s := range f.Switches {
		rs := rawSwitch{Name: s.Name}
		for _, u := range s.Uplinks {
			rs.Uplinks = append(rs.Uplinks, rawUplink(u))
		}
		r.Switches = append(r.Switches, rs)
	}
	for _, vm := range f.VMs {
		cpus := vm.CPUs
		rv := rawVM{
			Name: vm.Name, Kernel: vm.Kernel, Initrd: vm.Initrd, Cmdline: vm.Cmdline, Append: vm.Append,
			CPUs: &cpus, Mem: scalar{Text: FormatSize(vm.Mem), Set: true}, Class: vm.Class, Console: vm.Console,
			OnReboot: vm.OnReboot, OnCrash: vm.OnCrash,
		}
		for _, d := range vm.Disks {
			rv.Disks = append(rv.Disks, rawDisk(d))
		}
		for _, n := range vm.NICs {
			offloads := !n.NoOffloads
			rv.NICs = append(rv.NICs, rawNIC{Switch: n.Switch, MAC: n.MAC.String(), Offloads: &offloads})
		}
		r.VMs = append(r.VMs, rv)
	}
	return r
}

// checkRoundTrip asserts that an accepted file re-validates and reads back
// the same once written out in either format.
func checkRoundTrip(t *testing.T, f *File, baseDir string) {
	t.Helper()
	if err := f.Validate(); err != nil {
		t.Fatalf("accepted file does not re-validate: %v", err)
	}
	g := *f
	g.Normalize()
	if !reflect.DeepEqual(&g, f) {
		t.Fatalf("Normalize is not idempotent:\n%+v\n%+v", f, &g)
	}
	r := toRaw(f)
	j, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		data   []byte
		format Format
	}{{j, JSON}, {y, YAML}} {
		back, err := Parse(c.data, c.format, baseDir)
		if err != nil {
			t.Fatalf("%v written back does not parse: %v\n%s", c.format, err, c.data)
		}
		if !reflect.DeepEqual(back, f) {
			t.Fatalf("%v round trip differs:\n%+v\n%+v\n%s", c.format, f, back, c.data)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, p := range []string{"testdata/good.yaml", "testdata/good.json"} {
		f, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		checkRoundTrip(t, f, "/elsewhere")
	}
}

// TestExamples: every up file under examples/ is valid.
func TestExamples(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "examples", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no examples/*.yaml found (%v)", err)
	}
	for _, p := range paths {
		if _, err := Load(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestParseHostAllowsNoVMs(t *testing.T) {
	f, err := ParseHost([]byte("switches: [{name: sw0}]\nsched: {policy: central}\n"), YAML, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.VMs) != 0 || f.Sched.Policy != "central" || len(f.Switches) != 1 {
		t.Fatalf("got %+v", f)
	}
	if _, err := Parse([]byte("switches: [{name: sw0}]\n"), YAML, ""); err == nil || !strings.Contains(err.Error(), "no VMs") {
		t.Fatalf("Parse without VMs: %v", err)
	}
	if _, err := ParseHost([]byte("sched: {policy: fifo}\n"), YAML, ""); err == nil || !strings.Contains(err.Error(), "sched.policy") {
		t.Fatalf("bad policy: %v", err)
	}
}

func TestParseVM(t *testing.T) {
	vm, err := ParseVM([]byte(`{"name": "a", "mem": "512M", "disks": [{"path": "d.img"}], "nics": [{"switch": "sw0"}], "on_reboot": "restart"}`), JSON, "/base")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Name != "a" || vm.Mem != 512<<20 || vm.Disks[0].Path != "/base/d.img" || vm.OnReboot != "restart" || vm.CPUs != 0 {
		t.Fatalf("got %+v", vm)
	}
	for _, tc := range []struct{ body, want string }{
		{``, "empty VM description"},
		{`{"name": "a", "cpu": 2}`, `cpu: unknown key "cpu"`},
		{`{"name": "a", "mem": "12Q"}`, "mem: "},
		{`{"name": "a", "cpus": 0}`, "cpus: 0: must be from 1 to 255"},
		{`{"name": "A"}`, "name: "},
		{`{"mem": "1G"}`, "name: missing name"},
		{`{"name": "a", "nics": [{"mac": "01:00:00:00:00:01"}]}`, "nics[0].mac: 01:00:00:00:00:01 is a multicast address"},
		{`{"name": "a", "on_crash": "reboot"}`, `on_crash: "reboot": use stop or restart`},
		{`{"name": "a"} {"name": "b"}`, "trailing data"},
		{"name: a\n---\nname: b\n", "a second YAML document"},
		{`[1]`, "want a mapping"},
	} {
		format := Auto
		if strings.HasPrefix(tc.body, "{") {
			format = JSON
		}
		_, err := ParseVM([]byte(tc.body), format, "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseVM(%s): got %v, want an error with %q", tc.body, err, tc.want)
		}
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Errorf("ParseVM(%s): %T is not an *Error", tc.body, err)
		}
	}
}

func TestAddAndRemove(t *testing.T) {
	f, err := ParseHost([]byte("switches: [{name: sw0}]\n"), YAML, "")
	if err != nil {
		t.Fatal(err)
	}
	a, err := f.Add(VM{Name: "a", NICs: []NIC{{}}, Disks: []Disk{{Path: "/d.img"}}})
	if err != nil {
		t.Fatal(err)
	}
	if a.CPUs != DefaultCPUs || a.Mem != DefaultMem || a.Class != DefaultClass || a.OnReboot != "stop" ||
		a.NICs[0].Switch != "sw0" || len(a.NICs[0].MAC) != 6 {
		t.Fatalf("defaults not applied: %+v", a)
	}
	for _, tc := range []struct {
		vm   VM
		want string
	}{
		{VM{Name: "a"}, `name: duplicate "a" (also VM a)`},
		{VM{Name: "b", NICs: []NIC{{Switch: "sw9"}}}, `nics[0].switch: no switch named "sw9" (have sw0)`},
		{VM{Name: "b", NICs: []NIC{{MAC: a.NICs[0].MAC}}}, "nics[0].mac: duplicate " + a.NICs[0].MAC.String() + " (also VM a nics[0])"},
		{VM{Name: "b", Disks: []Disk{{Path: "/d.img", ReadOnly: true}}}, "disks[0].path: \"/d.img\" is also VM a.disks[0]; a shared disk must be readonly everywhere"},
		{VM{Name: "b", Disks: []Disk{{Path: "/e.img"}, {Path: "/e.img"}}}, "disks[1].path: \"/e.img\" is also VM b.disks[0]; a shared disk must be readonly everywhere"},
		{VM{Name: "b", CPUs: 999}, "cpus: 999: must be from 1 to 255"},
	} {
		if _, err := f.Add(tc.vm); err == nil || err.Error() != tc.want {
			t.Errorf("Add(%+v): got %v, want %q", tc.vm, err, tc.want)
		}
	}
	if len(f.VMs) != 1 {
		t.Fatalf("a refused Add changed the file: %d VMs", len(f.VMs))
	}
	b, err := f.Add(VM{Name: "b", NICs: []NIC{{}}})
	if err != nil {
		t.Fatal(err)
	}
	if b.NICs[0].MAC.String() == a.NICs[0].MAC.String() {
		t.Fatalf("b got a's MAC %s", b.NICs[0].MAC)
	}
	if !f.Remove("a") || f.Remove("a") || len(f.VMs) != 1 || f.VMs[0].Name != "b" {
		t.Fatalf("Remove: %+v", f.VMs)
	}
	if _, err := f.Add(VM{Name: "a", Disks: []Disk{{Path: "/d.img"}}}); err != nil {
		t.Fatalf("re-adding a after Remove: %v", err)
	}
}
