package solo

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/privdrop"
	"github.com/colibrivm/colibri/vmm"
)

// TestMain makes the test binary a stand-in for colibri-vmm when it is
// started the way Exec starts that: it reads the Spec and prints it.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == SpecFDFlag && os.Getenv("SOLO_TEST_VMM") == "1" {
		fd := -1
		if err := json.Unmarshal([]byte(os.Args[2]), &fd); err != nil {
			os.Exit(3)
		}
		s, err := ReadSpec(fd)
		if err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(4)
		}
		json.NewEncoder(os.Stdout).Encode(s)
		// The descriptor was closed by ReadSpec.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			os.Stderr.WriteString("descriptor still open")
			os.Exit(5)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func goodSpec() Spec {
	return Spec{Format: SpecFormat, Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0", CPUs: 2, MemSize: 256 << 20,
		Disks: []vmm.Disk{{Path: "/d", ReadOnly: true, StopOnError: true}}, RNG: true, KVMDevice: "/dev/kvm",
		Console: "/tmp/c", Stats: true, Seccomp: true, SeccompAction: "trap", User: &privdrop.IDs{UID: 65534, GID: 65534}}
}

func TestValidate(t *testing.T) {
	if err := goodSpec().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mutate func(*Spec)
		want   string
	}{
		{func(s *Spec) { s.Format = 2 }, "format 2, want 1"},
		{func(s *Spec) { s.Kernel = "" }, "no kernel"},
		{func(s *Spec) { s.CPUs = 0 }, "0 vCPUs"},
		{func(s *Spec) { s.CPUs = MaxCPUs + 1 }, "256 vCPUs"},
		{func(s *Spec) { s.MemSize = 0 }, "no guest memory"},
		{func(s *Spec) { s.Disks[0].Path = "" }, "disk 0 has no path"},
		{func(s *Spec) { s.SeccompAction = "allow" }, `unknown seccomp action "allow"`},
		{func(s *Spec) { s.User.UID = -1 }, "-1:65534 is not a uid:gid"},
	} {
		s := goodSpec()
		tc.mutate(&s)
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error with %q", err, tc.want)
		}
	}
}

// TestExecPassesSpec: Exec, in a child process, replaces it with a
// program (this test binary, in TestMain's colibri-vmm role) that reads
// back the Spec it was given on the inherited descriptor.
func TestExecPassesSpec(t *testing.T) {
	if os.Getenv("SOLO_TEST_EXEC") == "1" {
		err := Exec(os.Args[0], goodSpec())
		t.Fatalf("Exec returned: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestExecPassesSpec$")
	cmd.Env = append(os.Environ(), "SOLO_TEST_EXEC=1", "SOLO_TEST_VMM=1")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("child: %v: %s%s", err, out, stderr)
	}
	var got Spec
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("child printed %q: %v", out, err)
	}
	want, _ := json.Marshal(goodSpec())
	if g, _ := json.Marshal(got); string(g) != string(want) {
		t.Fatalf("spec came back as\n%s\nwant\n%s", g, want)
	}
}

func writeMemfd(t *testing.T, data string) int {
	t.Helper()
	fd, err := unix.MemfdCreate("solo-test", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fd, []byte(data)); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestReadSpecRefuses(t *testing.T) {
	good, _ := json.Marshal(goodSpec())
	for _, tc := range []struct{ data, want string }{
		{"", "is empty"},
		{"{", "unexpected EOF"},
		{`{"format": 1, "kernel": "/k", "cpus": 1, "mem_bytes": 1, "cpu": 3}`, `unknown field "cpu"`},
		{`{"format": 7, "kernel": "/k", "cpus": 1, "mem_bytes": 1}`, "format 7"},
		{strings.Repeat(" ", maxSpec) + string(good), "over 1048576 bytes"},
	} {
		_, err := ReadSpec(writeMemfd(t, tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%.40q: got %v, want an error with %q", tc.data, err, tc.want)
		}
	}
	if _, err := ReadSpec(-1); err == nil {
		t.Error("ReadSpec(-1) took it")
	}
	s, err := ReadSpec(writeMemfd(t, string(good)))
	if err != nil || s.Kernel != "/k" || s.User == nil || s.User.UID != 65534 || len(s.Disks) != 1 || !s.Disks[0].StopOnError {
		t.Fatalf("good spec read as %+v, %v", s, err)
	}
}
