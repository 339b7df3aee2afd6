package vmm_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/vmm"
)

// TestKVMBzImageFillsCache: the first boot of a bzImage (xz: left to the
// guest's decompressor while colibri fills its kernel cache at idle
// priority) leaves the decompressed kernel in the cache even when the
// guest is done before the fill: Close finishes it. Before, the process
// ended with the fill half done, and every boot of the kernel was a first
// one (bootbench: bzImage 18.8 s and ~10,000 more exits than the vmlinux's
// 8.3 s, sandbox).
func TestKVMBzImageFillsCache(t *testing.T) {
	testenv.RequireKVM(t)
	images := testenv.Images(t)
	cacheHome := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cacheHome)
	console := &testenv.Buffer{}
	vm, err := vmm.New(vmm.Config{
		Kernel:  filepath.Join(images, "vmlinuz"),
		Initrd:  filepath.Join(images, "initrd.img"),
		Cmdline: `console=ttyS0 quiet panic=-1 colibri.run="true"`,
		CPUs:    1,
		MemSize: 256 << 20,
		Console: console,
	})
	if err != nil {
		t.Fatalf("creating VM: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kind, err := vm.Run(ctx)
	if kind != vmm.ExitPowerOff {
		t.Fatalf("VM ended as %v (%v):\n%s", kind, err, console.String())
	}
	t0 := time.Now()
	vm.Close()
	t.Logf("Close waited %v for the cache fill (sandbox if in one)", time.Since(t0).Round(time.Millisecond))
	entries, _ := filepath.Glob(filepath.Join(cacheHome, "colibri", "kernels", "*.vmlinux"))
	if len(entries) != 1 {
		t.Fatalf("kernel cache holds %v after the first boot, want one entry", entries)
	}
	if fi, err := os.Stat(entries[0]); err != nil || fi.Size() < 1<<20 {
		t.Fatalf("cache entry %s: %v %v", entries[0], fi, err)
	}
}
