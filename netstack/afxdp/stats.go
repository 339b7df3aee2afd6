package afxdp

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Stats are a Socket's counters. RX is the wire-to-colibri direction
// (frames Transmit hands to the switch), TX the colibri-to-wire direction
// (frames Deliver puts on the TX ring).
type Stats struct {
	// Mode is how the socket is attached, as Mode.String reports it.
	Mode string `json:"mode"`

	// RxPackets and RxBytes count frames handed to Transmit's callback.
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	// RxInvalidDescs counts RX descriptors that pointed outside the
	// receive part of the UMEM, crossed a frame, had a bad length, or
	// named a frame colibri already owned. They are skipped.
	RxInvalidDescs uint64 `json:"rx_invalid_descs"`
	// RxBadIndex counts impossible producer indices on the RX ring.
	RxBadIndex uint64 `json:"rx_bad_index"`
	// FillBadIndex counts impossible consumer indices on the fill ring.
	FillBadIndex uint64 `json:"fill_bad_index"`
	// FillWakeups counts wake-ups of the kernel for the fill ring
	// (XDP_USE_NEED_WAKEUP).
	FillWakeups uint64 `json:"fill_wakeups"`

	// TxPackets and TxBytes count frames Deliver accepted and put on the
	// TX ring.
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	// TxCompleted counts frames the kernel returned on the completion
	// ring: sent, or dropped by the kernel (see Kernel).
	TxCompleted uint64 `json:"tx_completed"`
	// TxDropTooBig counts frames longer than a UMEM frame.
	TxDropTooBig uint64 `json:"tx_drop_too_big"`
	// TxDropRunt counts frames shorter than an Ethernet header.
	TxDropRunt uint64 `json:"tx_drop_runt"`
	// TxDropNoFrame counts frames dropped because every TX frame was in
	// flight.
	TxDropNoFrame uint64 `json:"tx_drop_no_frame"`
	// TxDropRingFull counts frames dropped because the TX ring was full.
	TxDropRingFull uint64 `json:"tx_drop_ring_full"`
	// TxBadIndex counts impossible consumer indices on the TX ring.
	TxBadIndex uint64 `json:"tx_bad_index"`
	// TxKicks counts sendto calls that told the kernel to send.
	TxKicks uint64 `json:"tx_kicks"`
	// TxKickErrors counts sendto calls that failed with something other
	// than EAGAIN or EBUSY.
	TxKickErrors uint64 `json:"tx_kick_errors"`
	// CompInvalidDescs counts completion entries that named no frame in
	// flight; they are skipped.
	CompInvalidDescs uint64 `json:"comp_invalid_descs"`
	// CompBadIndex counts impossible producer indices on the completion
	// ring.
	CompBadIndex uint64 `json:"comp_bad_index"`

	// Kernel is the socket's own counters (XDP_STATISTICS).
	Kernel KernelStats `json:"kernel"`
}

// KernelStats are the kernel's counters for an AF_XDP socket, read with
// getsockopt(XDP_STATISTICS).
type KernelStats struct {
	// RxDropped counts frames the kernel dropped for this socket.
	RxDropped uint64 `json:"rx_dropped"`
	// RxInvalidDescs counts invalid fill ring entries.
	RxInvalidDescs uint64 `json:"rx_invalid_descs"`
	// TxInvalidDescs counts invalid TX ring descriptors.
	TxInvalidDescs uint64 `json:"tx_invalid_descs"`
	// RxRingFull counts frames dropped because the RX ring was full.
	RxRingFull uint64 `json:"rx_ring_full"`
	// RxFillRingEmpty counts times the fill ring had no frame.
	RxFillRingEmpty uint64 `json:"rx_fill_ring_empty"`
	// TxRingEmpty counts times the kernel found the TX ring empty.
	TxRingEmpty uint64 `json:"tx_ring_empty"`
}

// counters are the live counters. Each is written by one side only (the
// RX side by Transmit's caller, the TX side by Deliver's and Flush's) and
// read by Stats from anywhere, hence atomics.
type counters struct {
	rxPackets, rxBytes, rxInvalid, rxBadIndex atomic.Uint64
	fillBadIndex, fillWakeups                 atomic.Uint64
	txPackets, txBytes, txCompleted           atomic.Uint64
	txTooBig, txRunt, txNoFrame, txRingFull   atomic.Uint64
	txBadIndex, txKicks, txKickErrors         atomic.Uint64
	compInvalid, compBadIndex                 atomic.Uint64
}

// kernelStats reads XDP_STATISTICS from the socket fd.
func kernelStats(fd int) (KernelStats, error) {
	var st unix.XDPStatistics
	size := uint32(unsafe.Sizeof(st))
	if err := getsockopt(fd, unix.SOL_XDP, unix.XDP_STATISTICS, unsafe.Pointer(&st), &size); err != nil {
		return KernelStats{}, err
	}
	return KernelStats{
		RxDropped:       st.Rx_dropped,
		RxInvalidDescs:  st.Rx_invalid_descs,
		TxInvalidDescs:  st.Tx_invalid_descs,
		RxRingFull:      st.Rx_ring_full,
		RxFillRingEmpty: st.Rx_fill_ring_empty_descs,
		TxRingEmpty:     st.Tx_ring_empty_descs,
	}, nil
}

// setsockopt passes a struct to setsockopt(2).
func setsockopt(fd, level, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

// getsockopt reads a struct with getsockopt(2).
func getsockopt(fd, level, opt int, p unsafe.Pointer, size *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(size)), 0)
	if e != 0 {
		return e
	}
	return nil
}
