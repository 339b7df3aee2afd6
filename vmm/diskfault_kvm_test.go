package vmm_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/vmm"
)

// fullDisk returns a 64 MiB sparse disk image on a 4 MiB tmpfs: writes
// past the first few MiB fail with ENOSPC, as on a full filesystem. Its
// first sector holds "marker-ok", flushed before any fault.
func fullDisk(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/run", "colibri-full-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mounting a small tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("umount", dir).Run()
		os.Remove(dir)
	})
	path := filepath.Join(dir, "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

// diskFaultScript writes past the space the image has, then asks for one
// more flush, and says how each went.
const diskFaultScript = "dd if=/dev/zero of=/dev/vda bs=1M count=16 seek=1 oflag=direct conv=fsync 2>/dev/null; echo fill=$?; " +
	"dd if=/dev/zero of=/dev/vda bs=512 count=1 seek=1 conv=notrunc,fsync 2>/dev/null; echo later-flush=$?"

func readMarker(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 9)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeMarker(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("marker-ok"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestKVMDiskFullReported: on a full filesystem the guest sees its writes
// fail, and a flush after the failure fails too (the host's fsync
// reported the error once; colibri keeps failing flushes until a reset),
// while what was flushed before is intact.
func TestKVMDiskFullReported(t *testing.T) {
	testenv.RequireKVM(t)
	disk := fullDisk(t)
	writeMarker(t, disk)
	out, kind, st := boot(t, vmm.Config{CPUs: 1, Disks: []vmm.Disk{{Path: disk}}}, diskFaultScript)
	if kind != vmm.ExitPowerOff {
		t.Errorf("VM ended with %v, want power-off", kind)
	}
	for _, want := range []string{"fill=1", "later-flush=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q: the guest was not told of the failure", want)
		}
	}
	if m := readMarker(t, disk); !bytes.Equal(m, []byte("marker-ok")) {
		t.Errorf("the first sector reads %q after the fault, want marker-ok", m)
	}
	var errs uint64
	for _, d := range st.Devices {
		errs += d.Errors
	}
	if errs == 0 {
		t.Errorf("no request error counted: %+v", st.Devices)
	}
}

// TestKVMDiskFullStops: with on-error=stop, the first failed write ends
// the VM as an error naming the disk; the guest is never told the write
// failed (nor that it succeeded), and what was flushed before is intact.
func TestKVMDiskFullStops(t *testing.T) {
	testenv.RequireKVM(t)
	disk := fullDisk(t)
	writeMarker(t, disk)
	images := testenv.Images(t)
	var console testenv.Buffer
	vm, err := vmm.New(vmm.Config{Kernel: filepath.Join(images, "vmlinux"), Initrd: filepath.Join(images, "initrd.img"),
		Cmdline: `console=ttyS0 quiet panic=-1 colibri.run="` + diskFaultScript + `"`, CPUs: 1, MemSize: 256 << 20,
		Disks: []vmm.Disk{{Path: disk, StopOnError: true}}, Console: &console})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	kind, err := vm.Run(ctx)
	out := console.String()
	t.Logf("guest console:\n%s", out)
	if kind != vmm.ExitError || err == nil || !strings.Contains(err.Error(), "disk 0") || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("VM ended with %v (%v), want an error naming disk 0 and ENOSPC", kind, err)
	}
	t.Logf("VM ended: %v", err)
	if strings.Contains(out, "fill=") {
		t.Errorf("the guest was answered for the failed write: %q", out)
	}
	if m := readMarker(t, disk); !bytes.Equal(m, []byte("marker-ok")) {
		t.Errorf("the first sector reads %q after the fault, want marker-ok", m)
	}
}
