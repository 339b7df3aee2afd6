package spec

import (
	"os"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FuzzParse feeds Parse arbitrary files: it must never panic, and whatever
// it accepts must re-validate and read back the same from both formats.
// Seeds: the good files, every bad file of TestBadFiles, and
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/good.yaml", "testdata/good.json"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint8(Auto))
	}
	for _, s := range []string{
		"vms: [{name: a, nics: [{}, {mac: \"52:54:00:00:01:01\"}]}]\nswitches: [{name: s}]\n",
		"vms:\n  - &b {name: a, mem: 64M}\n  - {<<: *b, name: b, class: lc}\n",
		`{"vms": [{"name": "a", "cmdline": "console=ttyS0 \u00e9", "disks": [{"path": "d", "readonly": true}]}]}`,
	} {
		f.Add([]byte(s), uint8(Auto))
	}
	for _, c := range badFiles {
		f.Add([]byte(c.data), uint8(c.format))
	}
	f.Fuzz(func(t *testing.T, data []byte, format uint8) {
		file, err := Parse(data, Format(format%3), "/base")
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			return
		}
		checkRoundTrip(t, file, "/base")
	})
}

// FuzzParseVM feeds ParseVM arbitrary bodies, as the agent's create route
// receives them: it must never panic, every error is an *Error, and a VM
// it accepts is accepted by File.Add on a host with one switch (or refused
// only for what depends on the host: its switches).
func FuzzParseVM(f *testing.F) {
	for _, s := range []string{
		`{"name": "a"}`,
		`{"name": "a", "cpus": 2, "mem": "512M", "class": "lc", "nics": [{"switch": "sw0", "mac": "52:54:00:00:00:01"}]}`,
		`{"name": "a", "disks": [{"path": "d.img", "readonly": true}], "on_reboot": "restart", "on_crash": "stop"}`,
		"name: a\nmem: 1G\nnics: [{}]\n",
		`{"name": "a", "nics": [{"switch": "nope"}]}`,
		`{"name": "", "mem": -1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		vm, err := ParseVM(data, Auto, "/base")
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			return
		}
		host := &File{Switches: []Switch{{Name: "sw0"}}}
		host.Normalize()
		added, err := host.Add(*vm)
		if err != nil {
			if !strings.Contains(err.Error(), "switch") {
				t.Fatalf("ParseVM accepted %q but Add refused it: %v", data, err)
			}
			return
		}
		if added.CPUs < 1 || added.Mem < MinMem || added.Class == "" || added.OnReboot == "" {
			t.Fatalf("Add left defaults unset: %+v", added)
		}
	})
}
