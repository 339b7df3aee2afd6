// Package vmm runs one virtual machine on KVM: guest memory, the Linux boot
// protocol, ACPI tables, the platform devices (UART, power, i8042, PCI with
// virtio devices) and one locked OS thread per vCPU.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/colibrivm/colibri/internal/gomaxprocs"
	"github.com/colibrivm/colibri/internal/logattr"
	"github.com/colibrivm/colibri/internal/osthread"
	"github.com/colibrivm/colibri/kvm"
	"github.com/colibrivm/colibri/vmm/acpi"
	"github.com/colibrivm/colibri/vmm/boot"
	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/pci"
	"github.com/colibrivm/colibri/vmm/serial"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"
	"golang.org/x/sys/unix"
)

// Disk is a raw disk image given to the guest as a virtio-blk device.
type Disk struct {
	Path     string
	ReadOnly bool
	// StopOnError ends the VM (ExitError, naming the disk) when a write
	// or a flush of the image fails, leaving the failed request
	// unanswered, instead of reporting the failure to the guest.
	StopOnError bool
}

// NIC is a virtio-net device on netstack's polled datapath.
type NIC struct {
	// MAC is the guest's address.
	MAC [6]byte
	// Pairs is the number of queue pairs; 0 gives one per vCPU.
	Pairs int
	// NoOffloads withholds checksum and TSO offloads from the guest.
	NoOffloads bool
	// Attach receives the queue pairs the guest's driver is using each
	// time that set changes (nil on reset); see netdev.Config.Attach.
	Attach func(pairs []*netdev.QueuePair)
}

// Config describes a VM.
type Config struct {
	// Kernel is the bzImage to boot; Initrd is optional.
	Kernel, Initrd string
	// Cmdline is the kernel command line.
	Cmdline string
	// CPUs is the number of vCPUs.
	CPUs int
	// MemSize is the guest RAM in bytes.
	MemSize uint64
	// HugePages backs guest memory with 2 MiB pages.
	HugePages bool
	// Disks become virtio-blk devices in order (/dev/vda, /dev/vdb, ...).
	Disks []Disk
	// NICs become virtio-net devices in order (eth0, eth1, ...).
	NICs []NIC
	// RNG adds a virtio-rng device.
	RNG bool
	// Console receives the guest's serial output; nil discards it.
	Console io.Writer
	// ConsoleIn, if set, is read for the guest's serial input until it
	// returns an error.
	ConsoleIn io.Reader
	// KVMDevice is the KVM device to open (default /dev/kvm).
	KVMDevice string
	// Logger receives debug and info events; nil discards them.
	Logger *slog.Logger
	// NoDefaultArgs passes Cmdline to the guest as it is, without the
	// arguments colibri adds unless the command line sets them
	// (boot.DefaultArgs: pci=noearly, which spares a stock kernel on
	// older AMD CPUs a scan of all 256 PCI buses through port I/O).
	NoDefaultArgs bool
	// GuestDecompress boots a bzImage through its own decompressor
	// instead of decompressing its kernel on the host; NoKernelCache
	// keeps colibri from caching decompressed kernels (see boot.Options).
	GuestDecompress, NoKernelCache bool
	// NoPCIConf1 stops decoding the legacy PCI configuration ports
	// 0xcf8–0xcff: the guest then reaches configuration space only
	// through the ECAM window declared in the ACPI MCFG table.
	NoPCIConf1 bool
}

// ExitKind says how a VM ended.
type ExitKind int

// How a VM can end.
const (
	ExitRunning ExitKind = iota
	// ExitPowerOff: the guest powered off (ACPI S5).
	ExitPowerOff
	// ExitReset: the guest asked for a reboot (the ACPI reset register,
	// the i8042 reset line, the BIOS reset vector).
	ExitReset
	// ExitStopped: the host stopped it (context cancelled, Stop).
	ExitStopped
	// ExitError: the VMM hit an error running it.
	ExitError
	// ExitCrash: the guest crashed: a triple fault (KVM_EXIT_SHUTDOWN) or
	// a crash it reported; Run's error is a *CrashError.
	ExitCrash
)

func (k ExitKind) String() string {
	if k < 0 || int(k) >= len(exitKindNames) {
		return fmt.Sprintf("exit(%d)", int(k))
	}
	return exitKindNames[k]
}

var exitKindNames = [...]string{"running", "power-off", "reset", "stopped", "error", "crash"}

// Failed reports whether k is a failure (an error or a crash) rather than
// an end the guest or the host asked for.
func (k ExitKind) Failed() bool { return k == ExitError || k == ExitCrash }

// VM is one virtual machine.
type VM struct {
	// fill is the kernel cache's fill, when this VM's kernel was not in
	// the cache (boot.Options.FillLater); Close waits for it.
	fill    *cacheFill
	cfg     Config
	log     *slog.Logger
	sys     *kvm.System
	kvm     *kvm.VM
	mem     *memory.Memory
	irqs    *irqRouter
	pio     pioBus
	pci     *pci.Bus
	uart    *serial.UART
	cpus    []*VCPU
	cpuid   []kvm.CPUIDEntry
	loaded  *boot.Loaded
	closers []io.Closer
	nics    []*netdev.Net
	// virtio are the virtio-pci transports in bus order, kept after
	// Close for their counters.
	virtio []*virtio.PCI

	start   time.Time
	timer   bootTimer
	console *firstOutput

	// runMu guards start and cpus, which Run sets once.
	runMu    sync.Mutex
	stopOnce sync.Once
	started  chan struct{}
	stopped  chan struct{}
	exitKind ExitKind
	exitErr  error
	exitAt   atomic.Int64 // ns from Run's start to the stop
	// nStarted is how many of cpus have started; set before started is
	// closed.
	nStarted int

	// pauseMu serialises Pause and Resume; paused is true in between.
	pauseMu sync.Mutex
	paused  bool
	pauses  atomic.Uint64
	// parked is woken whenever a vCPU thread parks or ends.
	parked waker
	// pausable are the devices Pause quiesces.
	pausable []pausable

	mmioUnhandled atomic.Uint64
}

// Memory layout constants of the platform.
const (
	ioapicAddr    = 0xfec0_0000
	pciMMIOBase   = memory.MMIOHoleStart
	pciMMIOSize   = 0x1000_0000 // 256 MiB below the boot timer
	ecamBase      = 0xe000_0000
	pciMMIO64Size = 64 << 30
	// I/O BARs (the virtio devices' notification ports) go at 0xc000 and
	// up, where PC firmware puts them, inside the host bridge's I/O
	// window of the DSDT.
	pciIOBase    = 0xc000
	pciIOSize    = 0x4000
	tssAddr      = 0xfffb_d000
	identityAddr = 0xfffb_c000
)

// New creates a VM from cfg: it validates the configuration, opens KVM,
// allocates guest memory, loads the kernel and creates the devices and
// vCPUs. Nothing runs until Run.
func New(cfg Config) (_ *VM, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for _, d := range cfg.Disks {
		if _, err := os.Stat(d.Path); err != nil {
			return nil, fmt.Errorf("disk: %w", err)
		}
	}
	// The kernel and initrd are mapped, not read into the heap: their
	// pages are the page cache's, copied once into guest memory, and
	// gone from the VMM's RSS when unmapped. Everything that reads the
	// mappings runs in boot.Guard, so a file truncated meanwhile is an
	// error, not a crash.
	kfile, err := boot.OpenFile(cfg.Kernel)
	if err != nil {
		return nil, fmt.Errorf("reading kernel: %w", err)
	}
	defer func() {
		if kfile != nil { // not handed to the cache's fill
			kfile.Close()
		}
	}()
	// A bzImage's kernel is decompressed by colibri (fast formats) or
	// read from the cache of decompressed kernels; a slow format's
	// first boot leaves it to the guest and fills the cache meanwhile.
	opts := boot.Options{GuestDecompress: cfg.GuestDecompress, FillLater: true}
	if dir, err := boot.DefaultCacheDir(); err == nil && !cfg.NoKernelCache {
		opts.CacheDir = dir
	}
	var kernel *boot.Kernel
	if err := boot.Guard(func() (err error) {
		kernel, err = boot.ParseWith(kfile.Bytes(), opts)
		return err
	}); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", cfg.Kernel, err)
	}
	defer kernel.Close()
	var initrd []byte
	if cfg.Initrd != "" {
		ifile, err := boot.OpenFile(cfg.Initrd)
		if err != nil {
			return nil, fmt.Errorf("reading initrd: %w", err)
		}
		defer ifile.Close()
		initrd = ifile.Bytes()
	}
	if need := boot.MinMemory(kernel, uint64(len(initrd))); cfg.MemSize < need {
		return nil, fmt.Errorf("memory of %d MiB is too small for this kernel and initrd: need at least %d MiB", cfg.MemSize>>20, need>>20)
	}

	dev := cfg.KVMDevice
	if dev == "" {
		dev = kvm.DevicePath
	}
	sys, err := kvm.OpenPath(dev)
	if err != nil {
		return nil, err
	}
	if err := sys.Probe(5 * time.Second); err != nil {
		sys.Close()
		return nil, fmt.Errorf("%w: %v", kvm.ErrNoKVM, err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger
	v := &VM{cfg: cfg, sys: sys, log: log, started: make(chan struct{}), stopped: make(chan struct{})}
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	if max := sys.MaxVCPUs(); cfg.CPUs > max {
		return nil, fmt.Errorf("%d vCPUs are more than this host's KVM allows (%d)", cfg.CPUs, max)
	}
	if v.cpuid, err = sys.SupportedCPUID(); err != nil {
		return nil, err
	}
	if v.kvm, err = sys.CreateVM(); err != nil {
		return nil, err
	}
	if v.mem, err = memory.New(cfg.MemSize, memory.Options{HugePages: cfg.HugePages}); err != nil {
		return nil, err
	}
	for i, r := range v.mem.Regions() {
		if err := v.kvm.SetUserMemoryRegion(uint32(i), r.GuestAddr, r.Size, v.mem.HostAddr(r)); err != nil {
			return nil, err
		}
	}
	if err := v.kvm.SetIdentityMapAddr(identityAddr); err != nil {
		return nil, err
	}
	if err := v.kvm.SetTSSAddr(tssAddr); err != nil {
		return nil, err
	}
	if err := v.kvm.CreateIRQChip(); err != nil {
		return nil, err
	}
	if err := v.kvm.CreatePIT2(); err != nil {
		return nil, err
	}
	if v.irqs, err = newIRQRouter(v.kvm); err != nil {
		return nil, err
	}

	if err := v.createDevices(); err != nil {
		return nil, err
	}

	tables, rsdp, err := acpi.Build(acpi.Config{
		CPUs:             cfg.CPUs,
		IOAPICAddr:       ioapicAddr,
		PCIMMIOBase:      pciMMIOBase,
		PCIMMIOSize:      pciMMIOSize,
		PCIMMIO64Base:    v.mmio64Base(),
		PCIMMIO64Size:    pciMMIO64Size,
		SleepControlPort: sleepControlPort,
		SleepStatusPort:  sleepStatusPort,
		ResetPort:        resetPort,
		ResetValue:       resetValue,
		Serial:           true,
		ECAMBase:         ecamBase,
		PowerButtonGSI:   powerButtonGSI,
	}, boot.ACPIAddr)
	if err != nil {
		return nil, fmt.Errorf("building ACPI tables: %w", err)
	}
	if err := v.mem.Write(boot.ACPIAddr, tables); err != nil {
		return nil, fmt.Errorf("writing ACPI tables: %w", err)
	}
	if err := v.mem.Write(resetVectorAddr, resetVectorCode); err != nil {
		return nil, fmt.Errorf("writing the reset vector: %w", err)
	}
	ecam := []boot.E820Entry{{Addr: ecamBase, Size: pci.ECAMSize, Type: boot.E820Reserved}}
	cmdline := cfg.Cmdline
	if !cfg.NoDefaultArgs {
		cmdline = boot.DefaultArgs(cmdline)
	}
	if err := boot.Guard(func() (err error) {
		v.loaded, err = boot.Load(v.mem, boot.Params{Kernel: kernel, Initrd: initrd, Cmdline: cmdline, RSDPAddr: rsdp, Reserved: ecam})
		return err
	}); err != nil {
		if errors.Is(err, boot.ErrFileChanged) {
			return nil, fmt.Errorf("loading kernel %s (initrd %q): %w", cfg.Kernel, cfg.Initrd, err)
		}
		return nil, err
	}
	if kernel.FillCache != nil {
		// The fill reads the bzImage's payload: the mapping is its now.
		v.fill = &cacheFill{done: make(chan struct{})}
		img, fill := kfile, kernel.FillCache
		osthread.Go(func() { v.fill.run(log, fill, img) })
		kfile = nil
	}
	log.Info("VM created", slog.String("kernel", cfg.Kernel), slog.Bool("elf", kernel.ELF), slog.String("kernel_note", kernel.Note), slog.Int("cpus", cfg.CPUs),
		slog.Uint64("mem_mib", cfg.MemSize>>20), slog.Int("disks", len(cfg.Disks)), slog.Uint64("initrd_addr", v.loaded.InitrdAddr),
		slog.Uint64("entry", v.loaded.Entry), slog.Uint64("rsdp", rsdp))
	// The kernel and initrd now live in guest memory: hand what parsing
	// them left in the heap back to the OS rather than carry it as VMM
	// RSS.
	debug.FreeOSMemory()
	return v, nil
}

// cacheFill is the decompression of a kernel for the kernel cache, which
// runs beside the VM that boots the same kernel through the guest's own
// decompressor.
type cacheFill struct {
	done chan struct{}
	tid  atomic.Int32
}

// run runs fill on a thread of the lowest priority, so that decompressing
// a kernel for the next boot takes only CPU time the guests leave; then it
// unmaps img, the bzImage fill reads, and returns the decompression's
// garbage (the kernel, 30–120 MiB, and the decoder's dictionary) to the OS.
func (f *cacheFill) run(log *slog.Logger, fill func() error, img *boot.File) {
	defer close(f.done) // on a thread of its own (osthread): its priority dies with it
	f.tid.Store(int32(unix.Gettid()))
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
	err := boot.Guard(fill)
	img.Close()
	debug.FreeOSMemory()
	if err != nil {
		log.Warn("kernel cache", logattr.Err(err))
		return
	}
	log.Debug("kernel cache filled")
}

// finish waits for the fill, at normal priority where the process may
// raise it (the guests it made way for are gone): a VM shorter than one
// decompression would otherwise end it unfinished, and every boot of the
// kernel would be a first one.
func (f *cacheFill) finish(log *slog.Logger) {
	select {
	case <-f.done:
		return
	default:
	}
	log.Info("finishing the kernel cache entry for the next boot of this kernel")
	if tid := f.tid.Load(); tid != 0 {
		_ = unix.Setpriority(unix.PRIO_PROCESS, int(tid), 0)
	}
	<-f.done
}

func (c *Config) validate() error {
	switch {
	case c.Kernel == "":
		return errors.New("no kernel given")
	case c.CPUs < 1:
		return fmt.Errorf("%d vCPUs: need at least 1", c.CPUs)
	case c.CPUs > 255:
		return fmt.Errorf("%d vCPUs: at most 255 (xAPIC ids)", c.CPUs)
	case c.MemSize < memory.MinSize:
		return fmt.Errorf("memory of %d MiB is too small: need at least %d MiB", c.MemSize>>20, memory.MinSize>>20)
	case c.MemSize > memory.MaxSize:
		return fmt.Errorf("memory of %d GiB is too large: at most %d GiB", c.MemSize>>30, memory.MaxSize>>30)
	}
	return nil
}

// mmio64Base is where the 64-bit PCI window starts: above RAM, 1 GiB aligned.
func (v *VM) mmio64Base() uint64 {
	regions := v.mem.Regions()
	top := regions[len(regions)-1].End()
	if top < memory.MMIOHoleEnd {
		top = memory.MMIOHoleEnd
	}
	return (top + (1<<30 - 1)) &^ (1<<30 - 1)
}

func (v *VM) createDevices() error {
	console := v.cfg.Console
	if console == nil {
		console = io.Discard
	}
	v.console = &firstOutput{w: console}
	v.pio.perPort = new([1 << 16]atomic.Uint32)
	v.uart = serial.New(v.console, func(level bool) { v.kvm.IRQLine(serial.COM1IRQ, level) })
	v.pio.add(serial.COM1Port, serial.PortCount, uartPorts{base: serial.COM1Port, u: v.uart})
	v.pio.add(sleepControlPort, 3, powerDevice{vm: v})
	v.pio.add(i8042DataPort, 1, i8042{vm: v})
	v.pio.add(i8042CommandPort, 1, i8042{vm: v})
	v.pio.add(0x80, 1, discardPort{}) // POST codes and io_delay
	return v.createPCIDevices()
}

type discardPort struct{}

func (discardPort) PIORead(_ uint16, data []byte) {
	for i := range data {
		data[i] = 0
	}
}
func (discardPort) PIOWrite(uint16, []byte) {}

func (v *VM) mmioRead(addr uint64, data []byte) {
	if addr-ecamBase < pci.ECAMSize {
		v.pci.ECAMRead(addr-ecamBase, data)
		return
	}
	if v.pci.MMIORead(addr, data) {
		return
	}
	v.mmioUnhandled.Add(1)
	for i := range data {
		data[i] = 0xff
	}
}

func (v *VM) mmioWrite(addr uint64, data []byte) {
	if addr == BootTimerAddr {
		v.timer.write(data)
		return
	}
	if addr-ecamBase < pci.ECAMSize {
		v.pci.ECAMWrite(addr-ecamBase, data)
		return
	}
	if v.pci.MMIOWrite(addr, data) {
		return
	}
	v.mmioUnhandled.Add(1)
}

// Run starts the vCPUs and blocks until the guest powers off or reboots,
// ctx is cancelled, or a vCPU fails. It returns how the VM ended; the error
// is non-nil only for ExitError and ExitCrash (a *CrashError).
func (v *VM) Run(ctx context.Context) (ExitKind, error) {
	// Each vCPU thread needs a Go P whenever it returns from KVM_RUN to
	// handle an exit; give the runtime one more P per vCPU so exits never
	// wait for the VMM's other goroutines (as sched's thread vCPUs do).
	defer gomaxprocs.Reserve(v.cfg.CPUs)()
	// Every VCPU exists before any thread starts, so that a stop from the
	// first vCPU reaches the ones still being created; a Stop from another
	// goroutine reads them under runMu.
	cpus := make([]*VCPU, v.cfg.CPUs)
	for i := range cpus {
		cpus[i] = &VCPU{id: i, vm: v, ready: make(chan error, 1), done: make(chan struct{})}
	}
	start := time.Now()
	v.runMu.Lock()
	if v.start.IsZero() {
		v.start = start
		v.cpus = cpus
	} else {
		cpus = nil // Run called twice: nothing to run
	}
	v.runMu.Unlock()
	v.timer.setStart(start)
	v.console.setStart(start)
	n := 0
	for i, c := range cpus {
		if v.ended() {
			break
		}
		var regs *kvm.Regs
		if i == 0 {
			regs = &v.loaded.Regs
		}
		osthread.Go(func() { c.run(func(cpu *kvm.VCPU) error { return v.setupVCPU(cpu, regs) }) })
		if err := <-c.ready; err != nil {
			<-c.done
			v.stop(ExitError, err)
			break
		}
		n++
		v.log.Debug("vCPU started", slog.Int("vcpu", i), slog.Int("tid", c.TID()))
	}
	v.nStarted = n
	close(v.started)
	if v.cfg.ConsoleIn != nil {
		go v.pumpConsole(v.cfg.ConsoleIn)
	}
	select {
	case <-ctx.Done():
		v.stop(ExitStopped, nil)
	case <-v.stopped:
	}
	for _, c := range cpus[:n] {
		<-c.done
	}
	return v.exitKind, v.exitErr
}

// Pause takes every vCPU out of guest mode and holds it there, and stops
// the virtio devices' workers, until Resume. It returns once no vCPU runs
// guest code (or ctx ends: the vCPUs then still stop, promptly). Pausing a
// paused VM does nothing; pausing one that has not started or has ended is
// an error. Datapath ports are not the VM's business: whoever attached the
// NICs' queues pauses them.
func (v *VM) Pause(ctx context.Context) error {
	v.pauseMu.Lock()
	defer v.pauseMu.Unlock()
	if err := v.checkLive("pause"); err != nil {
		return err
	}
	if v.paused {
		return nil
	}
	v.paused = true
	v.pauses.Add(1)
	cpus := v.VCPUs()
	for _, c := range cpus {
		c.pause()
	}
	for _, d := range v.pausable {
		d.Pause()
	}
	return v.parked.waitFor(ctx, func() bool {
		for _, c := range cpus {
			if c.Running() {
				return false
			}
		}
		return true
	})
}

// Resume lets a paused VM run again. Each vCPU, before it re-enters the
// guest, tells the guest's kvmclock that it was stopped, so the guest's
// watchdogs do not take the pause for a lockup.
func (v *VM) Resume() error {
	v.pauseMu.Lock()
	defer v.pauseMu.Unlock()
	if err := v.checkLive("resume"); err != nil {
		return err
	}
	if !v.paused {
		return nil
	}
	v.paused = false
	for _, d := range v.pausable {
		d.Resume()
	}
	for _, c := range v.VCPUs() {
		c.resume()
	}
	return nil
}

// Paused reports whether the VM is paused.
func (v *VM) Paused() bool {
	v.pauseMu.Lock()
	defer v.pauseMu.Unlock()
	return v.paused
}

// ended reports whether the VM has stopped.
func (v *VM) ended() bool {
	select {
	case <-v.stopped:
		return true
	default:
		return false
	}
}

func (v *VM) checkLive(op string) error {
	select {
	case <-v.started:
	default:
		return fmt.Errorf("%s: the VM has not started", op)
	}
	select {
	case <-v.stopped:
		return fmt.Errorf("%s: the VM has ended", op)
	default:
	}
	return nil
}

func (v *VM) pumpConsole(r io.Reader) {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			v.uart.Input(buf[:n])
		}
		if err != nil {
			return
		}
		select {
		case <-v.stopped:
			return
		default:
		}
	}
}

// Stop ends the VM as if the host had pulled the plug.
func (v *VM) Stop() { v.stop(ExitStopped, nil) }

func (v *VM) stop(kind ExitKind, err error) {
	v.stopOnce.Do(func() {
		v.log.Info("VM stopping", slog.Any("how", kind), logattr.Err(err))
		v.exitKind, v.exitErr = kind, err
		// Run sets start and cpus once, before any vCPU thread exists.
		v.runMu.Lock()
		if !v.start.IsZero() {
			v.exitAt.Store(int64(time.Since(v.start)))
		}
		cpus := v.cpus
		v.runMu.Unlock()
		close(v.stopped)
		for _, c := range cpus {
			c.stop()
		}
	})
}

// pausable is a device whose workers Pause stops and Resume restarts.
type pausable interface {
	Pause()
	Resume()
}

// waker lets a goroutine wait for a condition that other threads change
// and then call wake.
type waker struct {
	mu sync.Mutex
	ch chan struct{}
}

// wake wakes the goroutines in waitFor.
func (w *waker) wake() {
	w.mu.Lock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
	w.mu.Unlock()
}

// waitFor returns once cond holds, rechecking it after every wake (and
// every millisecond, as a backstop), or with ctx's error.
func (w *waker) waitFor(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		w.mu.Lock()
		if w.ch == nil {
			w.ch = make(chan struct{})
		}
		ch := w.ch
		w.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the vCPUs to leave guest mode: %w", ctx.Err())
		}
	}
}

// Started is closed once Run has started its vCPU threads; VCPUs is valid
// from then on.
func (v *VM) Started() <-chan struct{} { return v.started }

// Done is closed when the VM has stopped.
func (v *VM) Done() <-chan struct{} { return v.stopped }

// VCPUs returns the vCPUs whose threads started; before Started is closed
// it returns none.
func (v *VM) VCPUs() []*VCPU {
	select {
	case <-v.started:
		return v.cpus[:v.nStarted]
	default:
		return nil
	}
}

// Memory returns the guest memory.
func (v *VM) Memory() *memory.Memory { return v.mem }

// Close releases everything the VM holds. Call it after Run returned. If
// the VM started a kernel cache fill that is still running, Close waits
// for it.
func (v *VM) Close() error {
	if v.fill != nil {
		v.fill.finish(v.log)
	}
	for i := len(v.closers) - 1; i >= 0; i-- {
		v.closers[i].Close()
	}
	v.closers = nil
	if v.kvm != nil {
		v.kvm.Close()
	}
	if v.mem != nil {
		v.mem.Close()
	}
	if v.sys != nil {
		v.sys.Close()
	}
	return nil
}
