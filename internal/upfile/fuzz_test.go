package upfile

import (
	"os"
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
