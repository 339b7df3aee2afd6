// Package testenv tells tests what this host can run: whether KVM can boot a
// stock guest, where the guest images and the colibri binary are. Tests
// that need something absent skip with the reason, unless the environment
// demands it (COLIBRI_REQUIRE_KVM=1, as 'make test' sets where it runs the
// KVM tests), in which case they fail.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/colibrivm/colibri/kvm"
)

var (
	probeOnce sync.Once
	probeErr  error
)

// KVMError returns why this host's KVM cannot boot a stock guest (nil if it
// can).
func KVMError() error {
	probeOnce.Do(func() {
		sys, err := kvm.Open()
		if err != nil {
			probeErr = err
			return
		}
		defer sys.Close()
		probeErr = sys.Probe(5 * time.Second)
	})
	return probeErr
}

// Required reports whether missing KVM must fail tests instead of skipping.
func Required() bool { return os.Getenv("COLIBRI_REQUIRE_KVM") == "1" }

// RequireKVM skips (or, when required, fails) t unless KVM can boot guests.
func RequireKVM(t testing.TB) {
	t.Helper()
	if err := KVMError(); err != nil {
		if Required() {
			t.Fatalf("COLIBRI_REQUIRE_KVM=1 but KVM is not usable: %v", err)
		}
		t.Skipf("no usable KVM here (%v); 'make test' runs this test on real KVM inside scripts/kvm-sandbox", err)
	}
}

// RepoRoot returns the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Images returns the directory with the guest images built by 'make images'
// (vmlinuz, vmlinux, initrd.img, disk.ext4), failing t if they are missing.
func Images(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("COLIBRI_IMAGES")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), "guestimages", "out")
	}
	for _, f := range []string{"vmlinuz", "vmlinux", "initrd.img", "disk.ext4"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("guest image missing: %v (run 'make images')", err)
		}
	}
	return dir
}

// Binary returns the path of a colibri binary: $COLIBRI_BIN, or one built
// into t's temporary directory with colibri-vmm beside it (as make build
// puts them).
func Binary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("COLIBRI_BIN"); b != "" {
		return b
	}
	dir := t.TempDir()
	for _, prog := range []string{"colibri", "colibri-vmm"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, prog), "./cmd/"+prog)
		cmd.Dir = RepoRoot()
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", prog, err, b)
		}
	}
	return filepath.Join(dir, "colibri")
}

// SocketDir returns a new directory for Unix sockets that is removed when
// the test ends: under /run (a tmpfs), since the test's temporary
// directory may be on a filesystem that cannot hold sockets (the KVM
// sandbox shares the host's /tmp over 9p).
func SocketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/run", "colibri-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
