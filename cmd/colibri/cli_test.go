package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/solo"
	"github.com/colibrivm/colibri/internal/testenv"
)

// run runs the colibri binary and returns its exit code, stdout and stderr.
func run(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	// A hung guest fails the test after five minutes, not the whole binary.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running colibri: %v", err)
	}
	return code, stdout.String(), stderr.String()
}

// assertOneLineError checks a failed run printed one clear line, no panic
// and no goroutine dump.
func assertOneLineError(t *testing.T, name string, code int, stderr string, want string) {
	t.Helper()
	if code == 0 {
		t.Errorf("%s: exit 0, want failure", name)
	}
	if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic:") {
		t.Errorf("%s: stack trace on stderr:\n%s", name, stderr)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(stderr), "\n")
	if !strings.HasPrefix(first, "colibri: ") || !strings.Contains(first, want) {
		t.Errorf("%s: stderr %q, want one 'colibri: ...' line containing %q", name, stderr, want)
	}
}

func TestBootBadInput(t *testing.T) {
	bin := testenv.Binary(t)
	dir := t.TempDir()
	notKernel := filepath.Join(dir, "not-a-kernel")
	os.WriteFile(notKernel, []byte("#!/bin/sh\necho hello\n"+strings.Repeat("x", 4096)), 0o644)
	unreadable := filepath.Join(dir, "unreadable")
	os.WriteFile(unreadable, []byte("x"), 0o000)
	smallInitrd := filepath.Join(dir, "initrd")
	os.WriteFile(smallInitrd, []byte("07070"), 0o644)

	// A truncated copy of a real kernel, when the images exist.
	truncated := ""
	kernel := filepath.Join(testenv.RepoRoot(), "guestimages", "out", "vmlinuz")
	if img, err := os.ReadFile(kernel); err == nil {
		truncated = filepath.Join(dir, "truncated")
		os.WriteFile(truncated, img[:len(img)/2], 0o644)
	} else {
		t.Logf("no guest kernel at %s: the truncated-kernel and oversized-initrd cases use a synthetic image only", kernel)
	}

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing kernel", []string{"--kernel", filepath.Join(dir, "nope")}, "does not exist"},
		{"kernel is a directory", []string{"--kernel", dir}, "not a regular file"},
		{"not a kernel", []string{"--kernel", notKernel}, "not a Linux kernel image"},
		{"missing initrd", []string{"--kernel", notKernel, "--initrd", filepath.Join(dir, "nope")}, "initrd"},
		{"mem too small", []string{"--kernel", notKernel, "--mem", "1M"}, "too small"},
		{"mem absurd", []string{"--kernel", notKernel, "--mem", "99999999T"}, "--mem"},
		{"mem not a size", []string{"--kernel", notKernel, "--mem", "lots"}, "--mem"},
		{"zero cpus", []string{"--kernel", notKernel, "--cpus", "0"}, "--cpus 0"},
		{"too many cpus", []string{"--kernel", notKernel, "--cpus", "100000"}, "--cpus 100000"},
		{"bad disk option", []string{"--kernel", notKernel, "--disk", "x.img,rx"}, "unknown option"},
		{"missing disk", []string{"--kernel", notKernel, "--disk", filepath.Join(dir, "nope.img")}, "disk"},
		{"unknown flag", []string{"--frobnicate"}, "unknown flag"},
	}
	if os.Geteuid() != 0 {
		cases = append(cases, struct {
			name string
			args []string
			want string
		}{"unreadable kernel", []string{"--kernel", unreadable}, "permission denied"})
	}
	if truncated != "" {
		cases = append(cases,
			struct {
				name string
				args []string
				want string
			}{"truncated kernel", []string{"--kernel", truncated}, "truncated"},
			struct {
				name string
				args []string
				want string
			}{"initrd does not fit", []string{"--kernel", kernel, "--initrd", kernel, "--mem", "40M"}, "too small"},
		)
	}
	for _, tc := range cases {
		code, _, stderr := run(t, bin, append([]string{"boot"}, tc.args...)...)
		assertOneLineError(t, tc.name, code, stderr, tc.want)
	}
}

func TestBootNoKVMNamesSandbox(t *testing.T) {
	bin := testenv.Binary(t)
	kernel := filepath.Join(testenv.Images(t), "vmlinuz")
	code, _, stderr := run(t, bin, "boot", "--kernel", kernel, "--kvm-device", filepath.Join(t.TempDir(), "kvm"))
	assertOneLineError(t, "no kvm", code, stderr, "no usable /dev/kvm")
	if !strings.Contains(stderr, "sandbox") {
		t.Errorf("the no-KVM error does not name the sandbox:\n%s", stderr)
	}
}

// TestBootVMMFallback: a colibri-vmm that cannot be executed is said, and
// the VM runs in colibri's own process instead (here it fails at once on
// the missing KVM device, with colibri's own error).
func TestBootVMMFallback(t *testing.T) {
	bin := testenv.Binary(t)
	kernel := filepath.Join(testenv.Images(t), "vmlinuz")
	missing := filepath.Join(t.TempDir(), "colibri-vmm")
	t.Setenv("COLIBRI_VMM", missing)
	code, _, stderr := run(t, bin, "boot", "--kernel", kernel, "--kvm-device", filepath.Join(t.TempDir(), "kvm"))
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if code == 0 || len(lines) < 2 || lines[0] != "colibri: running the VM in this process: exec "+missing+": no such file or directory" ||
		!strings.HasPrefix(lines[1], "colibri: ") || !strings.Contains(lines[1], "no usable /dev/kvm") {
		t.Fatalf("exit %d, stderr:\n%s\nwant the failed exec said, then the in-process run's KVM error", code, stderr)
	}
}

func TestHelpAndVersion(t *testing.T) {
	bin := testenv.Binary(t)
	for _, args := range [][]string{{"--help"}, {"boot", "--help"}, {"check", "--help"}, {"version", "--help"}} {
		code, out, _ := run(t, bin, args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("colibri %v: exit %d, output %q", args, code, out)
		}
	}
	code, out, _ := run(t, bin, "version")
	if code != 0 || !strings.HasPrefix(out, "colibri ") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]uint64{"512M": 512 << 20, "1G": 1 << 30, "2g": 2 << 30, "256": 256 << 20, "64MiB": 64 << 20, "1024K": 1 << 20, "1T": 1 << 40}
	for s, want := range good {
		if got, err := parseSize(s); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "-1G", "1X", "G", "1.5G", "99999999999999999999G"} {
		if _, err := parseSize(s); err == nil {
			t.Errorf("parseSize(%q) accepted", s)
		}
	}
}

func TestKVMCLIBootStats(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	code, out, stderr := run(t, bin, "boot", "-v", "--mem", "256M", "--stats", "--cmdline", `console=ttyS0 quiet panic=-1 colibri.run="echo cli-ok"`)
	t.Logf("stdout:\n%s\nstderr:\n%s", out, stderr)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(out, "cli-ok") {
		t.Error("the command on the kernel command line did not run")
	}
	for _, want := range []string{"VM ended: power-off", "time to first guest output", "time to guest init", "exits to userspace", "VMM RSS"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("--stats output lacks %q", want)
		}
	}
	// colibri boot became colibri-vmm (built beside colibri by make build
	// and testenv.Binary): the VM's process links only the VMM.
	if !strings.Contains(stderr, "process colibri-vmm)") {
		t.Errorf("the VM did not run in colibri-vmm (stderr above)")
	}
	// Once the vCPUs ran, the binary's start-up pages were given back
	// (internal/exepages; the saving is measured by scripts/memstat).
	if !strings.Contains(stderr, "start-up pages of the executable released") {
		t.Errorf("colibri-vmm did not release its start-up pages (stderr above)")
	}
}

// TestKVMCLIBootReboot: a guest that reboots ends the VM, and colibri boot
// exits 0 saying so: through the kernel's default reboot method (ACPI
// reset register, then the keyboard controller) and with reboot=k (the
// i8042 reset command alone).
func TestKVMCLIBootReboot(t *testing.T) {
	testenv.RequireKVM(t)
	bin := testenv.Binary(t)
	for _, extra := range []string{"", "reboot=k"} {
		cmdline := `console=ttyS0 quiet panic=-1 ` + extra + ` colibri.run="echo rebooting; reboot -f"`
		want := "process colibri-vmm)"
		if extra != "" {
			// The VM in colibri's own process, as when colibri-vmm is
			// missing.
			t.Setenv("COLIBRI_VMM", "off")
			want = "process " + filepath.Base(bin) + ")"
		}
		code, out, stderr := run(t, bin, "boot", "--mem", "256M", "--stats", "--cmdline", cmdline)
		if !strings.Contains(stderr, want) {
			t.Errorf("cmdline %q: --stats does not say %q", extra, want)
		}
		if code != 0 || !strings.Contains(out, "rebooting") || !strings.Contains(stderr, "VM ended: reset") {
			t.Errorf("cmdline %q: exit %d, want 0 with the guest's line and 'VM ended: reset'\nstdout:\n%s\nstderr:\n%s", extra, code, out, stderr)
		}
		if strings.Contains(out, "powering off") {
			t.Errorf("cmdline %q: the guest powered off instead of rebooting", extra)
		}
	}
}

// TestSubcommandNames: every entry of subcommands builds the command it
// is named after, and a command line naming one builds just that one.
func TestSubcommandNames(t *testing.T) {
	for _, s := range subcommands() {
		if got := s.build().Name(); got != s.name {
			t.Errorf("subcommand %q builds %q", s.name, got)
		}
		root := newRootCmd([]string{s.name, "--help"})
		if cmds := root.Commands(); len(cmds) != 1 || cmds[0].Name() != s.name {
			t.Errorf("%s --help built %d commands", s.name, len(cmds))
		}
	}
	if n := len(newRootCmd([]string{"--help"}).Commands()); n != len(subcommands()) {
		t.Errorf("--help built %d commands, want all %d", n, len(subcommands()))
	}
	if n := len(newRootCmd(nil).Commands()); n != len(subcommands()) {
		t.Errorf("no arguments built %d commands, want all %d", n, len(subcommands()))
	}
}

// TestSoloMaxCPUs: colibri-vmm takes as many vCPUs as the schema allows.
func TestSoloMaxCPUs(t *testing.T) {
	if solo.MaxCPUs != spec.MaxCPUs {
		t.Fatalf("solo.MaxCPUs %d, spec.MaxCPUs %d", solo.MaxCPUs, spec.MaxCPUs)
	}
}
