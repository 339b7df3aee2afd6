package kvm

import (
	"errors"
	"fmt"
	"unsafe"

	gokvm "github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"
)

// Ioctl numbers (KVMIO = 0xAE), from include/uapi/linux/kvm.h.
var (
	ioGetAPIVersion      = gokvm.IIO(0x00)
	ioCreateVM           = gokvm.IIO(0x01)
	ioGetMSRIndexList    = gokvm.IIOWR(0x02, 4)
	ioCheckExtension     = gokvm.IIO(0x03)
	ioGetVCPUMmapSize    = gokvm.IIO(0x04)
	ioGetSupportedCPUID  = gokvm.IIOWR(0x05, 8)
	ioCreateVCPU         = gokvm.IIO(0x41)
	ioSetUserMemory      = gokvm.IIOW(0x46, unsafe.Sizeof(userspaceMemoryRegion{}))
	ioSetTSSAddr         = gokvm.IIO(0x47)
	ioSetIdentityMapAddr = gokvm.IIOW(0x48, 8)
	ioCreateIRQChip      = gokvm.IIO(0x60)
	ioIRQLine            = gokvm.IIOW(0x61, 8)
	ioSetGSIRouting      = gokvm.IIOW(0x6a, 8)
	ioIRQFD              = gokvm.IIOW(0x76, unsafe.Sizeof(irqfd{}))
	ioCreatePIT2         = gokvm.IIOW(0x77, 64)
	ioIOEventFD          = gokvm.IIOW(0x79, unsafe.Sizeof(ioeventfd{}))
	ioRun                = gokvm.IIO(0x80)
	ioGetRegs            = gokvm.IIOR(0x81, unsafe.Sizeof(Regs{}))
	ioSetRegs            = gokvm.IIOW(0x82, unsafe.Sizeof(Regs{}))
	ioGetSregs           = gokvm.IIOR(0x83, unsafe.Sizeof(Sregs{}))
	ioSetSregs           = gokvm.IIOW(0x84, unsafe.Sizeof(Sregs{}))
	ioGetMSRs            = gokvm.IIOWR(0x88, 8)
	ioSetMSRs            = gokvm.IIOW(0x89, 8)
	ioGetFPU             = gokvm.IIOR(0x8c, unsafe.Sizeof(FPU{}))
	ioSetFPU             = gokvm.IIOW(0x8d, unsafe.Sizeof(FPU{}))
	ioGetLAPIC           = gokvm.IIOR(0x8e, unsafe.Sizeof(LAPICState{}))
	ioSetLAPIC           = gokvm.IIOW(0x8f, unsafe.Sizeof(LAPICState{}))
	ioSetCPUID2          = gokvm.IIOW(0x90, 8)
	ioGetMPState         = gokvm.IIOR(0x98, 4)
	ioSetMPState         = gokvm.IIOW(0x99, 4)
	ioSetTSCKHz          = gokvm.IIO(0xa2)
	ioGetTSCKHz          = gokvm.IIO(0xa3)
	ioEnableCap          = gokvm.IIOW(0xa3, unsafe.Sizeof(enableCap{}))
	ioKVMClockCtrl       = gokvm.IIO(0xad)
	ioGetStatsFD         = gokvm.IIO(0xce)
)

// Error is a failed KVM ioctl.
type Error struct {
	// Op names the ioctl, e.g. "KVM_CREATE_VCPU".
	Op string
	// Errno is what the kernel returned.
	Errno unix.Errno
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Op, e.Errno) }

// Unwrap lets errors.Is match the errno.
func (e *Error) Unwrap() error { return e.Errno }

// ioctl issues one ioctl and retries EINTR. It must never be used for
// KVM_RUN, where EINTR is an event (see VCPU.Run).
func ioctl(op string, fd int, req, arg uintptr) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return r, &Error{Op: op, Errno: errno}
		}
		return r, nil
	}
}

// IsErrno reports whether err is a KVM error carrying errno e.
func IsErrno(err error, e unix.Errno) bool { return errors.Is(err, e) }
