package boot

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/colibrivm/colibri/internal/seccomp"
)

const seccompChildEnv = "COLIBRI_BOOT_SECCOMP_CHILD"

// TestCacheUnderSeccomp: a VM created after the process-wide seccomp
// filter is in place (a VM added to a running host) reads and fills the
// kernel cache. `colibri up` with a bzImage died of SIGSYS in the cache's
// os.Chtimes (utimensat was not in the list) before the fix.
func TestCacheUnderSeccomp(t *testing.T) {
	if dir := os.Getenv(seccompChildEnv); dir != "" {
		if err := seccomp.Install(seccomp.Options{}); err != nil {
			t.Fatal(err)
		}
		img := fakeCompressedBzImage(readPayload(t, XZ))
		for _, want := range []bool{false, true} { // cold, then warm
			k, err := ParseWith(img, Options{CacheDir: dir})
			if err != nil || k.Cached != want {
				t.Fatalf("cached=%v: %v %+v", want, err, k)
			}
		}
		// A fill left for later writes through its file mapping.
		later := filepath.Join(dir, "later")
		k, err := ParseWith(img, Options{CacheDir: later, FillLater: true})
		if err != nil || k.FillCache == nil {
			t.Fatalf("fill later: %v %+v", err, k)
		}
		if err := k.FillCache(); err != nil {
			t.Fatal(err)
		}
		if k, err := ParseWith(img, Options{CacheDir: later}); err != nil || !k.Cached {
			t.Fatalf("after the fill: %v %+v", err, k)
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Fatalf("needs root (seccomp filters without no_new_privs), euid %d", os.Geteuid())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCacheUnderSeccomp$", "-test.v")
	cmd.Env = append(os.Environ(), seccompChildEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the cache under the process filter: %v\n%s", err, out)
	}
}
