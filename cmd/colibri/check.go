package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/kvm"
)

func newCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Report what this host offers colibri (KVM, capabilities, eBPF, cgroups)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !runCheck(cmd.OutOrStdout()) {
				return exitError{1}
			}
			return nil
		},
	}
}

// runCheck prints one line per facility and reports whether KVM can run
// guests here.
func runCheck(w io.Writer) bool {
	ok := true
	sys, err := kvm.Open()
	if err != nil {
		fmt.Fprintf(w, "kvm:        NO: %v\n            run inside the KVM sandbox (scripts/kvm-sandbox), or load kvm-intel/kvm-amd\n", err)
		ok = false
	} else {
		defer sys.Close()
		fmt.Fprintf(w, "kvm:        %s: API %d, max %d vCPUs\n", kvm.DevicePath, kvm.APIVersion, sys.MaxVCPUs())
		if err := sys.Probe(2 * time.Second); err != nil {
			fmt.Fprintf(w, "kvm probe:  NO: cannot run a plain x86 guest: %v\n", err)
			ok = false
		} else {
			fmt.Fprintf(w, "kvm probe:  ok: ran a real-mode test guest\n")
		}
		var have, missing []string
		for _, c := range []kvm.Capability{kvm.CapIRQChip, kvm.CapIRQFD, kvm.CapIOEventFD, kvm.CapIRQRouting,
			kvm.CapImmediateExit, kvm.CapTSCDeadlineTimer, kvm.CapBinaryStatsFD, kvm.CapX2APICAPI} {
			if n, err := sys.CheckExtension(c); err == nil && n > 0 {
				have = append(have, c.String())
			} else {
				missing = append(missing, c.String())
			}
		}
		fmt.Fprintf(w, "kvm caps:   %s\n", strings.Join(have, " "))
		if len(missing) > 0 {
			fmt.Fprintf(w, "kvm lacks:  %s\n", strings.Join(missing, " "))
		}
		if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
			fmt.Fprintf(w, "kvm note:   this KVM is PVM (kvm_pvm): it may not run stock guest kernels\n")
		}
	}
	fmt.Fprintf(w, "cgroup:     %s\n", cgroupVersion())
	fmt.Fprintf(w, "ebpf:       %s\n", bpfStatus())
	fmt.Fprintf(w, "cpus:       %d online\n", onlineCPUs())
	return ok
}

func cgroupVersion() string {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return "none mounted at /sys/fs/cgroup"
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v2 (unified) at /sys/fs/cgroup"
	}
	return "v1 (or hybrid) at /sys/fs/cgroup: colibri's containment needs v2"
}

func bpfStatus() string {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return "no kernel BTF (/sys/kernel/btf/vmlinux): the eBPF observer needs it"
	}
	if os.Geteuid() != 0 {
		return "kernel BTF present; loading programs needs root (or CAP_BPF+CAP_PERFMON)"
	}
	return "kernel BTF present, running as root"
}

func onlineCPUs() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0
	}
	return set.Count()
}
