package main

import (
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// captureStderr runs f with os.Stderr going to a pipe and returns what f
// wrote there.
func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	f()
	os.Stderr = saved
	w.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}

func TestRunRefusesBadArguments(t *testing.T) {
	memfd, err := unix.MemfdCreate("bad-spec", 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(memfd, []byte(`{"format": 1, "kernel": "/k", "cpus": 0, "mem_bytes": 1}`))
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage: colibri-vmm --spec-fd N"},
		{[]string{"--spec-fd"}, 2, "usage:"},
		{[]string{"--kernel", "x"}, 2, "run 'colibri boot' instead"},
		{[]string{"--spec-fd", "three"}, 2, `colibri: --spec-fd "three": not a file descriptor`},
		{[]string{"--spec-fd", "999"}, 2, "colibri: reading the VM description from descriptor 999"},
		{[]string{"--spec-fd", strconv.Itoa(memfd)}, 2, "colibri: VM description asks for 0 vCPUs"},
	} {
		var code int
		stderr := captureStderr(t, func() { code = run(tc.args) })
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("run(%q) = %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}
