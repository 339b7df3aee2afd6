package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/colibrivm/colibri/host"
	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/exepages"
	"github.com/colibrivm/colibri/internal/solo"
	"github.com/colibrivm/colibri/vmm"
)

// defaultCmdline boots the guest with its console on the UART.
const defaultCmdline = "console=ttyS0 quiet panic=-1"

type bootFlags struct {
	kernel, initrd, cmdline string
	appendArgs              string
	cpus                    int
	mem                     string
	disks                   []string
	net                     string
	noRNG                   bool
	stats                   bool
	console                 string
	hugePages               bool
	kvmDevice               string
	verbose                 bool
	confine                 confineFlags
}

func newBootCmd() *cobra.Command {
	var f bootFlags
	cmd := &cobra.Command{
		Use:   "boot",
		Short: "Boot a Linux guest with its console on this terminal",
		Long: `Boot a Linux guest from a bzImage or an uncompressed ELF vmlinux (and an
optional initrd) on KVM. The guest's
serial console is this terminal: its output goes to stdout (or --console FILE),
and when stdin is a terminal what you type goes to the guest. Ctrl-A x quits.

With no --kernel, colibri boots the default guest images built by 'make images'
(a stock Debian kernel, uncompressed, and a busybox initrd), found in $COLIBRI_IMAGES, next to
the colibri binary (../guestimages/out) or in ./guestimages/out.

colibri exits 0 when the guest powers off or reboots.

Without --net the VM runs in colibri-vmm, found beside the colibri binary: once
its flags are checked, colibri becomes that small program (same pid, terminal
and exit status), which links only the VMM. $COLIBRI_VMM names another
colibri-vmm; COLIBRI_VMM=off runs the VM in colibri's own process.`,
		Example: `  colibri boot
  colibri boot --cpus 2 --mem 1G --disk disk.ext4,ro --cmdline 'console=ttyS0 colibri.shell=1'
  colibri boot --kernel /boot/vmlinuz --initrd initrd.img --stats
  colibri boot --net tap=colibri0,mac=52:54:00:12:34:56`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBoot(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.kernel, "kernel", "", "bzImage or ELF vmlinux to boot (default: the image built by 'make images')")
	fl.StringVar(&f.initrd, "initrd", "", "initrd to load (default: the image built by 'make images' when --kernel is not given)")
	fl.StringVar(&f.cmdline, "cmdline", defaultCmdline, "kernel command line")
	fl.StringVar(&f.appendArgs, "append", "", "text appended to the kernel command line")
	fl.IntVar(&f.cpus, "cpus", 1, "number of vCPUs")
	fl.StringVar(&f.mem, "mem", "512M", "guest memory (e.g. 256M, 2G)")
	fl.StringArrayVar(&f.disks, "disk", nil, "raw disk image as virtio-blk, PATH[,ro][,on-error=stop|report] (repeatable; on-error=stop ends the VM when a write or flush of the image fails, instead of telling the guest)")
	fl.StringVar(&f.net, "net", "", "a virtio-net NIC on colibri's polled datapath with a TAP uplink (created if absent, removed on exit if created), tap=NAME[,mac=MAC]")
	fl.BoolVar(&f.noRNG, "no-rng", false, "do not give the guest a virtio-rng device")
	fl.BoolVar(&f.stats, "stats", false, "print timings and VM exits by reason on exit (to stderr)")
	fl.StringVar(&f.console, "console", "", "write the guest console to FILE instead of stdout")
	fl.BoolVar(&f.hugePages, "hugepages", false, "back guest memory with 2 MiB huge pages")
	fl.StringVar(&f.kvmDevice, "kvm-device", "/dev/kvm", "KVM device to use")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log what the VMM does (to stderr)")
	addConfineFlags(fl, &f.confine)
	return cmd
}

func runBoot(cmd *cobra.Command, f bootFlags) error {
	if f.cpus < 1 || f.cpus > spec.MaxCPUs {
		return fmt.Errorf("--cpus %d: must be from 1 to %d", f.cpus, spec.MaxCPUs)
	}
	s := solo.Spec{
		Format:    solo.SpecFormat,
		Kernel:    f.kernel,
		Initrd:    f.initrd,
		Cmdline:   f.cmdline,
		CPUs:      f.cpus,
		RNG:       !f.noRNG,
		HugePages: f.hugePages,
		KVMDevice: f.kvmDevice,
		Console:   f.console,
		Verbose:   f.verbose,
		Stats:     f.stats,
	}
	if f.appendArgs != "" {
		s.Cmdline += " " + f.appendArgs
	}
	var err error
	if s.MemSize, err = parseSize(f.mem); err != nil {
		return fmt.Errorf("--mem: %w", err)
	}
	for _, d := range f.disks {
		disk, err := parseDisk(d)
		if err != nil {
			return err
		}
		s.Disks = append(s.Disks, disk)
	}
	var ns netSpec
	if f.net != "" {
		if ns, err = parseNet(f.net); err != nil {
			return err
		}
	}
	if s.Kernel, s.Initrd, err = resolveKernel(s.Kernel, s.Initrd); err != nil {
		return err
	}
	on, action, ids, err := f.confine.parse()
	if err != nil {
		return err
	}
	s.Seccomp, s.User = on, ids
	if on {
		s.SeccompAction = action.String()
	}
	if f.console != "" {
		// Say a console file that cannot be made in colibri's words,
		// before the VM's process takes over.
		file, err := os.OpenFile(f.console, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("--console: %w", err)
		}
		file.Close()
	}

	stdio := solo.Stdio{In: os.Stdin, Out: cmd.OutOrStdout(), Err: os.Stderr}
	if f.net != "" {
		err = solo.RunWith(cmd.Context(), s, stdio, func(ctx context.Context, cfg vmm.Config) (vmm.ExitKind, error, error) {
			return bootOnHost(ctx, cfg, ns, f.stats, f.confine)
		})
	} else {
		if vmmPath := vmmProgram(); vmmPath != "" {
			err := solo.Exec(vmmPath, s) // returns only if it failed
			cmd.PrintErrf("colibri: running the VM in this process: %v\n", err)
		}
		err = solo.Run(cmd.Context(), s, stdio)
	}
	var st solo.ExitStatus
	if errors.As(err, &st) {
		return exitError{st.Code}
	}
	return err
}

// vmmProgram returns the program a VM without a network runs in:
// $COLIBRI_VMM if set ("off": none, the VM runs in this process), else
// colibri-vmm beside this binary if there is one.
func vmmProgram() string {
	switch v := os.Getenv("COLIBRI_VMM"); v {
	case "off":
		return ""
	case "":
		return solo.FindVMM()
	default:
		return v
	}
}

// bootOnHost runs the VM cfg describes on a host whose one switch links
// its NIC to a TAP uplink, until it ends or ctx does.
func bootOnHost(ctx context.Context, cfg vmm.Config, ns netSpec, stats bool, conf confineFlags) (vmm.ExitKind, error, error) {
	const sw = "boot"
	confine, err := conf.confinement()
	if err != nil {
		return 0, nil, err
	}
	h, err := host.New(ctx, host.Config{
		Spec:    spec.File{Switches: []spec.Switch{{Name: sw, Uplinks: []spec.Uplink{{TAP: ns.tap}}}}},
		Logger:  cfg.Logger,
		Confine: confine,
	})
	if err != nil {
		return 0, nil, fmt.Errorf("--net: %w", err)
	}
	defer h.Close(context.Background())
	s := spec.VM{Name: "guest", Kernel: cfg.Kernel, Initrd: cfg.Initrd, Cmdline: cfg.Cmdline, CPUs: cfg.CPUs, Mem: cfg.MemSize,
		NICs: []spec.NIC{{Switch: sw, MAC: ns.mac}}}
	for _, d := range cfg.Disks {
		s.Disks = append(s.Disks, spec.Disk{Path: d.Path, ReadOnly: d.ReadOnly, OnError: map[bool]string{true: spec.ActionStop, false: ""}[d.StopOnError]})
	}
	v, err := h.CreateVM(s, host.WithVMMConfig(func(c *vmm.Config) {
		c.Console, c.ConsoleIn = cfg.Console, cfg.ConsoleIn
		c.RNG, c.HugePages, c.KVMDevice = cfg.RNG, cfg.HugePages, cfg.KVMDevice
	}))
	if err != nil {
		return 0, nil, solo.NoKVMHint(err)
	}
	if err := h.DropPrivileges(); err != nil { // --user, once the VM's files are open
		return 0, nil, err
	}
	if err := v.Start(); err != nil {
		return 0, nil, err
	}
	exepages.ReleaseAndLog(cfg.Logger) // start-up is over: docs/PERF.md, "VMM memory overhead"
	go func() {
		<-ctx.Done()
		_ = v.Stop(context.Background(), host.StopOptions{Force: true})
	}()
	exit, err := v.Wait(context.Background())
	if err != nil {
		return 0, nil, err
	}
	if stats {
		var b strings.Builder
		ns := h.Stats().Netstack
		_ = ns.WriteText(&b)
		solo.PrintStats(os.Stderr, exit.Kind, v.Stats(), b.String())
	}
	return exit.Kind, exit.Err, nil
}

// resolveKernel gives an empty kernel the default images' kernel and
// initrd, then checks that the kernel and initrd can be read.
func resolveKernel(kernel, initrd string) (string, string, error) {
	if kernel == "" {
		dir, err := defaultImages()
		if err != nil {
			return "", "", err
		}
		// The uncompressed vmlinux (same kernel) spares the guest its
		// decompression; the bzImage is the fallback.
		kernel = filepath.Join(dir, "vmlinux")
		if _, err := os.Stat(kernel); err != nil {
			kernel = filepath.Join(dir, "vmlinuz")
		}
		if initrd == "" {
			initrd = filepath.Join(dir, "initrd.img")
		}
	}
	if err := checkReadable("kernel", kernel); err != nil {
		return "", "", err
	}
	if initrd != "" {
		if err := checkReadable("initrd", initrd); err != nil {
			return "", "", err
		}
	}
	return kernel, initrd, nil
}

func checkReadable(what, path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s %s does not exist", what, path)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s %s is not a regular file", what, path)
	}
	return nil
}

// defaultImages finds the directory holding the images 'make images' built.
func defaultImages() (string, error) {
	var candidates []string
	if d := os.Getenv("COLIBRI_IMAGES"); d != "" {
		candidates = append(candidates, d)
	}
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), "..", "guestimages", "out"))
	}
	candidates = append(candidates, filepath.Join("guestimages", "out"))
	for _, d := range candidates {
		if _, err := os.Stat(filepath.Join(d, "vmlinuz")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no --kernel given and no default guest images found (looked in %s): run 'make images' or pass --kernel", strings.Join(candidates, ", "))
}

func parseDisk(s string) (vmm.Disk, error) {
	path, opts, _ := strings.Cut(s, ",")
	d := vmm.Disk{Path: path}
	if path == "" {
		return d, fmt.Errorf("--disk %q: no path", s)
	}
	if opts != "" {
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "ro", "readonly":
				d.ReadOnly = true
			case "rw":
			case "on-error=stop":
				d.StopOnError = true
			case "on-error=report":
			default:
				return d, fmt.Errorf("--disk %q: unknown option %q (want ro, rw, on-error=stop or on-error=report)", s, o)
			}
		}
	}
	return d, nil
}
