package kvm

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// APIVersion is the only KVM API version colibri speaks.
const APIVersion = 12

// DevicePath is where the KVM device lives.
const DevicePath = "/dev/kvm"

// ErrNoKVM is wrapped by Open's error when the host has no usable /dev/kvm.
var ErrNoKVM = errors.New("no usable /dev/kvm")

// Capability is a KVM_CAP_* number for KVM_CHECK_EXTENSION.
type Capability uint32

// Capabilities colibri relies on or reports.
const (
	CapIRQChip          Capability = 0
	CapUserMemory       Capability = 3
	CapSetTSSAddr       Capability = 4
	CapExtCPUID         Capability = 7
	CapNrVCPUs          Capability = 9
	CapNrMemSlots       Capability = 10
	CapPIT2             Capability = 33
	CapIRQRouting       Capability = 25
	CapIRQFD            Capability = 32
	CapIOEventFD        Capability = 36
	CapMaxVCPUs         Capability = 66
	CapTSCDeadlineTimer Capability = 72
	CapImmediateExit    Capability = 136
	CapX2APICAPI        Capability = 129
	CapBinaryStatsFD    Capability = 203
	CapMaxVCPUID        Capability = 128
)

var capabilityNames = map[Capability]string{
	CapIRQChip: "IRQCHIP", CapUserMemory: "USER_MEMORY", CapSetTSSAddr: "SET_TSS_ADDR",
	CapExtCPUID: "EXT_CPUID", CapNrVCPUs: "NR_VCPUS", CapNrMemSlots: "NR_MEMSLOTS",
	CapPIT2: "PIT2", CapIRQRouting: "IRQ_ROUTING", CapIRQFD: "IRQFD", CapIOEventFD: "IOEVENTFD",
	CapMaxVCPUs: "MAX_VCPUS", CapTSCDeadlineTimer: "TSC_DEADLINE_TIMER",
	CapImmediateExit: "IMMEDIATE_EXIT", CapX2APICAPI: "X2APIC_API",
	CapBinaryStatsFD: "BINARY_STATS_FD", CapMaxVCPUID: "MAX_VCPU_ID",
}

// String returns the capability's name without the KVM_CAP_ prefix.
func (c Capability) String() string {
	if n, ok := capabilityNames[c]; ok {
		return n
	}
	return fmt.Sprintf("CAP(%d)", uint32(c))
}

// RequiredCapabilities are the capabilities colibri cannot run without.
var RequiredCapabilities = []Capability{
	CapUserMemory, CapIRQChip, CapPIT2, CapIRQRouting, CapIRQFD, CapIOEventFD,
	CapExtCPUID, CapImmediateExit, CapSetTSSAddr,
}

// System is an open /dev/kvm.
type System struct {
	fd       int
	mmapSize int
}

// Open opens /dev/kvm, checks the API version and the capabilities colibri
// needs.
func Open() (*System, error) { return OpenPath(DevicePath) }

// OpenPath is Open for a KVM device at another path.
func OpenPath(path string) (*System, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("%w: %s does not exist (no kvm-intel/kvm-amd loaded, or no hardware virtualization)", ErrNoKVM, path)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("%w: opening %s: %v (run as root or join the kvm group)", ErrNoKVM, path, err)
		}
		return nil, fmt.Errorf("%w: opening %s: %v", ErrNoKVM, path, err)
	}
	s := &System{fd: fd}
	v, err := ioctl("KVM_GET_API_VERSION", fd, ioGetAPIVersion, 0)
	if err != nil {
		s.Close()
		return nil, err
	}
	if v != APIVersion {
		s.Close()
		return nil, fmt.Errorf("%w: KVM API version %d, colibri needs %d", ErrNoKVM, v, APIVersion)
	}
	for _, c := range RequiredCapabilities {
		if n, err := s.CheckExtension(c); err != nil || n == 0 {
			s.Close()
			return nil, fmt.Errorf("%w: KVM lacks capability %v", ErrNoKVM, c)
		}
	}
	sz, err := ioctl("KVM_GET_VCPU_MMAP_SIZE", fd, ioGetVCPUMmapSize, 0)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.mmapSize = int(sz)
	return s, nil
}

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// CheckExtension returns KVM_CHECK_EXTENSION's answer for c (0: absent).
func (s *System) CheckExtension(c Capability) (int, error) {
	r, err := ioctl("KVM_CHECK_EXTENSION("+c.String()+")", s.fd, ioCheckExtension, uintptr(c))
	return int(r), err
}

// MaxVCPUs returns the largest number of vCPUs a VM may have.
func (s *System) MaxVCPUs() int {
	if n, err := s.CheckExtension(CapMaxVCPUs); err == nil && n > 0 {
		return n
	}
	if n, err := s.CheckExtension(CapNrVCPUs); err == nil && n > 0 {
		return n
	}
	return 4
}

// SupportedCPUID returns the CPUID leaves KVM can expose to a guest.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	for n := 128; n <= 4096; n *= 2 {
		entries, err := getCPUID(s.fd, n)
		if err == nil {
			return entries, nil
		}
		if !errors.Is(err, unix.E2BIG) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: more than 4096 entries")
}

func getCPUID(fd int, n int) ([]CPUIDEntry, error) {
	entrySize := int(unsafe.Sizeof(CPUIDEntry{}))
	buf := make([]byte, 8+n*entrySize)
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(n)
	if _, err := ioctl("KVM_GET_SUPPORTED_CPUID", fd, ioGetSupportedCPUID, uintptr(unsafe.Pointer(&buf[0]))); err != nil {
		return nil, err
	}
	got := int(*(*uint32)(unsafe.Pointer(&buf[0])))
	out := make([]CPUIDEntry, got)
	for i := range out {
		out[i] = *(*CPUIDEntry)(unsafe.Pointer(&buf[8+i*entrySize]))
	}
	return out, nil
}

// MSRIndexList returns the MSRs KVM saves and restores for a vCPU.
func (s *System) MSRIndexList() ([]uint32, error) {
	for n := 256; n <= 8192; n *= 2 {
		buf := make([]uint32, 1+n)
		buf[0] = uint32(n)
		_, err := ioctl("KVM_GET_MSR_INDEX_LIST", s.fd, ioGetMSRIndexList, uintptr(unsafe.Pointer(&buf[0])))
		if err == nil {
			return append([]uint32(nil), buf[1:1+buf[0]]...), nil
		}
		if !errors.Is(err, unix.E2BIG) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: too many MSRs")
}

// CreateVM creates a new, empty VM.
func (s *System) CreateVM() (*VM, error) {
	fd, err := ioctl("KVM_CREATE_VM", s.fd, ioCreateVM, 0)
	if err != nil {
		return nil, err
	}
	return &VM{fd: int(fd), sys: s, mmapSize: s.mmapSize}, nil
}

// Available reports whether /dev/kvm exists and can be opened, without
// checking that it can run a guest.
func Available() bool {
	f, err := os.OpenFile(DevicePath, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
