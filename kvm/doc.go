// Package kvm is colibri's typed Go API over the /dev/kvm ioctls: the system
// (API version, capabilities, supported CPUID), a VM (memory slots, in-kernel
// irqchip and PIT, GSI routing, irqfd, ioeventfd, stats) and a vCPU (the
// shared kvm_run page with immediate_exit, registers, CPUID, MSRs, FPU,
// LAPIC, KVM_RUN).
//
// It reuses the register and CPUID layouts of github.com/bobuhiro11/gokvm;
// nothing else in colibri imports gokvm. Every error names the ioctl that
// failed and carries its errno.
//
// Ownership: System, VM and VCPU hold raw file descriptors (not *os.File),
// so no finalizer can close one that is still in use; call Close.
package kvm
