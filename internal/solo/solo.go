// Package solo runs one VM on its own in the calling process: no switch,
// scheduler or agent, its console on this process's terminal. It is what
// `colibri boot` runs, either in the colibri process or, after an exec, in
// cmd/colibri-vmm: a binary that links only the VMM, so that a VM's
// process does not pay for the agent, the datapath and the scheduler
// (their package initialisation and the binary pages it touches; see
// docs/PERF.md, "VMM memory overhead").
package solo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/term"

	"github.com/colibrivm/colibri/internal/clilog"
	"github.com/colibrivm/colibri/internal/exepages"
	"github.com/colibrivm/colibri/internal/privdrop"
	"github.com/colibrivm/colibri/internal/seccomp"
	"github.com/colibrivm/colibri/kvm"
	"github.com/colibrivm/colibri/vmm"
)

// SpecFormat is the version of Spec's encoding. A Spec of another format
// is refused: colibri and colibri-vmm come from one build.
const SpecFormat = 1

// MaxCPUs is the most vCPUs a Spec may ask for: host/spec.MaxCPUs, which
// solo does not import (it would link the YAML schema into colibri-vmm);
// cmd/colibri's TestSoloMaxCPUs keeps the two equal.
const MaxCPUs = 255

// Spec describes the VM and how to run it. It crosses an exec as JSON, so
// it holds only data: paths rather than open files.
type Spec struct {
	Format    int        `json:"format"`
	Kernel    string     `json:"kernel"`
	Initrd    string     `json:"initrd,omitempty"`
	Cmdline   string     `json:"cmdline"`
	CPUs      int        `json:"cpus"`
	MemSize   uint64     `json:"mem_bytes"`
	Disks     []vmm.Disk `json:"disks,omitempty"`
	RNG       bool       `json:"rng,omitempty"`
	HugePages bool       `json:"hugepages,omitempty"`
	KVMDevice string     `json:"kvm_device,omitempty"`
	// Console, if set, is a file the guest's serial output goes to
	// instead of standard output (created, truncated).
	Console string `json:"console,omitempty"`
	// Verbose logs what the VMM does to standard error; Stats prints the
	// VM's counters there when it ends.
	Verbose bool `json:"verbose,omitempty"`
	Stats   bool `json:"stats,omitempty"`
	// Seccomp installs the system call filters with SeccompAction (trap,
	// kill or log) once the VM is set up; User, if set, is who every
	// thread becomes after that.
	Seccomp       bool          `json:"seccomp,omitempty"`
	SeccompAction string        `json:"seccomp_action,omitempty"`
	User          *privdrop.IDs `json:"user,omitempty"`
}

// Validate checks what Run would otherwise find out late, or not at all.
func (s Spec) Validate() error {
	switch {
	case s.Format != SpecFormat:
		return fmt.Errorf("VM description of format %d, want %d (colibri and colibri-vmm must come from one build)", s.Format, SpecFormat)
	case s.Kernel == "":
		return errors.New("VM description has no kernel")
	case s.CPUs < 1 || s.CPUs > MaxCPUs:
		return fmt.Errorf("VM description asks for %d vCPUs: must be from 1 to %d", s.CPUs, MaxCPUs)
	case s.MemSize == 0:
		return errors.New("VM description has no guest memory")
	}
	for i, d := range s.Disks {
		if d.Path == "" {
			return fmt.Errorf("VM description: disk %d has no path", i)
		}
	}
	if s.Seccomp {
		if _, err := seccomp.ParseAction(s.SeccompAction); err != nil {
			return fmt.Errorf("VM description: %w", err)
		}
	}
	if s.User != nil && (s.User.UID < 0 || s.User.GID < 0) {
		return fmt.Errorf("VM description: user %d:%d is not a uid:gid", s.User.UID, s.User.GID)
	}
	return nil
}

// Stdio is where Run's VM talks: the guest's console output goes to Out
// (unless Spec.Console names a file), messages and --stats to Err, and
// when In is a terminal what is typed there goes to the guest.
type Stdio struct {
	In       *os.File
	Out, Err io.Writer
}

// ExitStatus is the error Run returns when the VM was stopped by a signal
// (SIGINT, SIGTERM, SIGHUP): the process should exit with Code.
type ExitStatus struct{ Code int }

func (e ExitStatus) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Runner runs the VM cfg describes until it ends or ctx does. It returns
// how the VM ended, the VM's own error (for a failed end), and an error
// that kept the VM from running.
type Runner func(ctx context.Context, cfg vmm.Config) (vmm.ExitKind, error, error)

// Run boots the VM s describes on its own and runs it until the guest
// powers off or reboots (nil), a signal stops it (ExitStatus 130), or it
// fails. Ctrl-A x on a terminal quits.
func Run(ctx context.Context, s Spec, stdio Stdio) error {
	return RunWith(ctx, s, stdio, func(ctx context.Context, cfg vmm.Config) (vmm.ExitKind, error, error) {
		vm, err := vmm.New(cfg)
		if err != nil {
			return 0, nil, NoKVMHint(err)
		}
		defer vm.Close()
		if err := Confine(s); err != nil { // the VM's files are open: filters, then the user
			return 0, nil, err
		}
		ran := make(chan struct{})
		go releaseStartupPages(vm.Started(), ran, cfg.Logger)
		kind, runErr := vm.Run(ctx)
		close(ran)
		if s.Stats {
			PrintStats(stdio.Err, kind, vm.Stats())
		}
		return kind, runErr, nil
	})
}

// releaseStartupPages gives back the executable's pages once started is
// closed (the vCPUs run: set-up is over), unless ran is closed first. The
// binary's text and read-only data are resident almost whole after
// set-up; the run loop needs a part of them, which faults back in.
// Measured by scripts/memstat (docs/PERF.md).
func releaseStartupPages(started, ran <-chan struct{}, log *slog.Logger) {
	select {
	case <-started:
	case <-ran:
		return
	}
	exepages.ReleaseAndLog(log)
}

// RunWith is Run with the VM run by run: it sets up what Run does around
// the VM (console file, terminal, signals, logger) and maps how the VM
// ended to Run's result.
func RunWith(ctx context.Context, s Spec, stdio Stdio, run Runner) error {
	if err := s.Validate(); err != nil {
		return err
	}
	cfg := vmm.Config{
		Kernel: s.Kernel, Initrd: s.Initrd, Cmdline: s.Cmdline, CPUs: s.CPUs, MemSize: s.MemSize,
		Disks: s.Disks, RNG: s.RNG, HugePages: s.HugePages, KVMDevice: s.KVMDevice,
		Logger: clilog.New(s.Verbose, stdio.Err),
	}
	out := stdio.Out
	if s.Console != "" {
		file, err := os.Create(s.Console)
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		defer file.Close() // opened before the user switch: writable after it
		out = file
	}
	cfg.Console = out

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var interrupted atomic.Bool
	go func() {
		select {
		case <-sigs:
			interrupted.Store(true)
			cancel()
		case <-ctx.Done():
		}
	}()

	if stdio.In != nil {
		in := int(stdio.In.Fd())
		if term.IsTerminal(in) {
			if state, err := term.MakeRaw(in); err == nil {
				defer term.Restore(in, state)
			}
			cfg.ConsoleIn = &escapeReader{r: stdio.In, quit: cancel}
		}
	}

	kind, runErr, err := run(ctx, cfg)
	if err != nil {
		return err
	}
	switch kind {
	case vmm.ExitPowerOff, vmm.ExitReset:
		return nil
	case vmm.ExitStopped:
		if interrupted.Load() {
			return ExitStatus{130}
		}
		return nil
	}
	return fmt.Errorf("VM failed: %w", runErr)
}

// Confine installs the system call filters and then switches to the
// user, as s asks; call it once the VM's files are open.
func Confine(s Spec) error {
	if s.Seccomp {
		action, err := seccomp.ParseAction(s.SeccompAction)
		if err != nil {
			return err
		}
		opts := seccomp.Options{Action: action}
		if s.User != nil {
			opts.DropTo = &seccomp.IDs{UID: s.User.UID, GID: s.User.GID}
		}
		if err := seccomp.Install(opts); err != nil {
			return err
		}
	}
	if s.User != nil {
		return privdrop.Drop(*s.User)
	}
	return nil
}

// NoKVMHint adds what to do to an error that says there is no usable KVM.
func NoKVMHint(err error) error {
	if errors.Is(err, kvm.ErrNoKVM) {
		return fmt.Errorf("%w\n  run it inside the KVM sandbox: scripts/kvm-sandbox ./bin/colibri boot ... (or 'make demo'), or load kvm-intel/kvm-amd", err)
	}
	return err
}

// PrintStats writes a VM's counters at its end to w, with CRLF line ends
// (the terminal may be in raw mode), and the process's memory beyond
// guest memory, naming the program that ran the VM.
func PrintStats(w io.Writer, kind vmm.ExitKind, st vmm.Stats, extra ...string) {
	fmt.Fprintf(w, "\r\ncolibri: VM ended: %v\r\n", kind)
	if o, err := vmm.VMMOverheadRSS(); err == nil {
		prog := "?"
		if exe, err := os.Executable(); err == nil {
			prog = exe[strings.LastIndexByte(exe, '/')+1:]
		}
		fmt.Fprintf(w, "VMM RSS beyond guest memory: %.1f MiB (anonymous %.1f MiB, binary and files %.1f MiB; %d threads; process %s)\r\n",
			float64(o.Total())/(1<<20), float64(o.Anon)/(1<<20), float64(o.File)/(1<<20), o.Threads, prog)
	}
	fmt.Fprint(w, strings.ReplaceAll(st.Format(), "\n", "\r\n"))
	for _, e := range extra {
		fmt.Fprint(w, strings.ReplaceAll(e, "\n", "\r\n"))
	}
}
