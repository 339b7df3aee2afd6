package vmm_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/vmm"
)

func copyFile(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// boot runs a guest with the default images and returns its console output.
func boot(t *testing.T, cfg vmm.Config, run string) (string, vmm.ExitKind, vmm.Stats) {
	return bootWith(t, cfg, run, nil)
}

// bootWith is boot with a function that runs beside the guest once its
// vCPUs have started.
func bootWith(t *testing.T, cfg vmm.Config, run string, during func(*vmm.VM)) (string, vmm.ExitKind, vmm.Stats) {
	t.Helper()
	images := testenv.Images(t)
	if cfg.Kernel == "" {
		cfg.Kernel = filepath.Join(images, "vmlinux")
	}
	cfg.Initrd = filepath.Join(images, "initrd.img")
	cfg.Cmdline = "console=ttyS0 quiet panic=-1"
	if run != "" {
		cfg.Cmdline += ` colibri.run="` + run + `"`
	}
	if cfg.MemSize == 0 {
		cfg.MemSize = 256 << 20
	}
	var console testenv.Buffer
	cfg.Console = &console
	vm, err := vmm.New(cfg)
	if err != nil {
		t.Fatalf("creating VM: %v", err)
	}
	defer vm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	if during != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-vm.Started():
				during(vm)
			case <-vm.Done():
			}
		}()
	}
	kind, err := vm.Run(ctx)
	wg.Wait()
	out := console.String()
	st := vm.Stats()
	t.Logf("guest console:\n%s", out)
	t.Logf("stats:\n%s", st.Format())
	if err != nil {
		t.Fatalf("VM ended with %v: %v", kind, err)
	}
	return out, kind, st
}

func TestKVMBootDiskRNG(t *testing.T) {
	testenv.RequireKVM(t)
	disk := copyFile(t, filepath.Join(testenv.Images(t), "disk.ext4"))
	cmd := "mount /dev/vda /mnt && cat /mnt/hello.txt && echo written-by-guest > /mnt/guest.txt && sync && umount /mnt && " +
		"echo rng-bytes=$(head -c 64 /dev/hwrng | wc -c)"
	// This one boots the bzImage; the others the same kernel uncompressed.
	kernel := filepath.Join(testenv.Images(t), "vmlinuz")
	out, kind, st := boot(t, vmm.Config{Kernel: kernel, CPUs: 1, Disks: []vmm.Disk{{Path: disk}}, RNG: true}, cmd)
	if kind != vmm.ExitPowerOff {
		t.Errorf("VM ended with %v, want power-off", kind)
	}
	for _, want := range []string{"colibri-guest: up: cpus=1", "hello from the colibri disk image", "rng-bytes=64", "colibri-guest: exit status 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if st.GuestInit == 0 {
		t.Error("the guest's init never wrote the boot timer")
	}
	got, err := exec.Command("debugfs", "-R", "cat /guest.txt", disk).Output()
	if err != nil {
		t.Fatalf("reading guest.txt back with debugfs: %v", err)
	}
	if strings.TrimSpace(string(got)) != "written-by-guest" {
		t.Errorf("file the guest wrote reads %q on the host", got)
	}
}

func TestKVMBootTwoCPUsReadOnlyDisk(t *testing.T) {
	testenv.RequireKVM(t)
	disk := filepath.Join(testenv.Images(t), "disk.ext4")
	before, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	cmd := "echo ro=$(cat /sys/block/vda/ro); dd if=/dev/vda of=/dev/null bs=512 count=8 && echo READ-OK; " +
		"if dd if=/dev/zero of=/dev/vda bs=512 count=1 conv=fsync; then echo WRITE-ACCEPTED; else echo WRITE-REFUSED; fi"
	// While the guest boots, park each vCPU for a while and let it go, as
	// the scheduler does: the guest must carry on and finish.
	parkedSeen := make([]bool, 2)
	during := func(vm *vmm.VM) {
		time.Sleep(2 * time.Second)
		for i, c := range vm.VCPUs() {
			if err := c.Park(); err != nil {
				t.Errorf("park vCPU %d: %v", i, err)
				return
			}
			deadline := time.Now().Add(5 * time.Second)
			for c.Running() && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			parkedSeen[i] = !c.Running()
			time.Sleep(300 * time.Millisecond)
			if err := c.Unpark(); err != nil {
				t.Errorf("unpark vCPU %d: %v", i, err)
			}
		}
	}
	out, kind, st := bootWith(t, vmm.Config{CPUs: 2, Disks: []vmm.Disk{{Path: disk, ReadOnly: true}}}, cmd, during)
	for i, seen := range parkedSeen {
		if !seen {
			t.Errorf("vCPU %d never left guest mode after Park", i)
		}
	}
	if st.Parks < 2 || st.Kicks < 2 {
		t.Errorf("parks %d kicks %d, want at least 2 each", st.Parks, st.Kicks)
	}
	if kind != vmm.ExitPowerOff {
		t.Errorf("VM ended with %v, want power-off", kind)
	}
	for _, want := range []string{"colibri-guest: up: cpus=2", "ro=1", "READ-OK", "WRITE-REFUSED"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	after, _ := os.ReadFile(disk)
	if !bytes.Equal(before, after) {
		t.Error("the read-only disk image changed")
	}
}
