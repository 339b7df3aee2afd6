// Package netstack is colibri's bypass datapath: guests' virtio-net queues
// and host uplinks served by polling threads pinned to dedicated cores, an
// L2 learning switch between them, and counters for all of it. It never
// hands guest-to-guest traffic to the host kernel's network stack.
//
// Frames may carry offload requests (a checksum to fill in, a TCP segment
// to cut; see internal/vnet) from the guest's or the host's side. They
// travel through the switch as they are to an endpoint that takes them
// (OffloadEndpoint: a guest that negotiated the offloads, a TAP) and are
// finished in software by the poller for any other (an AF_XDP socket, a
// guest without them).
//
// netstack does not import the VMM: a guest NIC's queue pairs and every
// uplink are Endpoints, an interface the virtio-net device satisfies
// structurally. cmd/colibri wires the two together.
package netstack

import "github.com/colibrivm/colibri/internal/vnet"

// Endpoint is one queue pair of a switch port: the transmit side a poller
// drains and the receive side the switch fills. A virtio-net queue pair, a
// TAP device and an AF_XDP socket are Endpoints. Frames are plain Ethernet
// frames (destination MAC first), with no virtio-net header.
//
// Transmit, Arm and Disarm are called only by the one poller that owns the
// endpoint. Deliver and Flush may be called from any poller, but never
// concurrently for one endpoint: the port serialises them. Both hold at
// every moment, also while SetEndpoints replaces a port's endpoints (an
// endpoint kept across the replacement keeps its poller and its lock) or
// SetPaused detaches them. An Endpoint is known by its identity: it must
// be a pointer.
type Endpoint interface {
	// Transmit hands up to max frames the endpoint has sent to fn, in
	// order, with the offloads the sender left pending (the zero Offload
	// for a complete frame), and returns how many it handed over. A frame
	// aliases the endpoint's memory and is valid only during the call to
	// fn, and must not change during it: the switch checks its addresses
	// and then delivers it, so an endpoint whose memory someone else
	// writes (a guest's buffers) hands over its own copy.
	Transmit(max int, fn func(frame []byte, off vnet.Offload)) int
	// Deliver copies a complete frame into the endpoint's receive side.
	// It returns false, and the frame is dropped, when there is no room.
	Deliver(frame []byte) bool
	// Flush publishes the frames delivered since the last Flush and
	// interrupts the receiver if it asked for that. Pollers call it once
	// per batch, not per frame.
	Flush()
	// WaitFD is the file descriptor that becomes readable when the
	// endpoint has frames to transmit while notifications are armed (a
	// virtio kick eventfd, a TAP fd, an AF_XDP socket).
	WaitFD() int
	// Arm re-enables notifications before the poller goes to sleep. It
	// returns true if frames became available meanwhile: the poller must
	// then keep polling instead of sleeping.
	Arm() bool
	// Disarm suppresses notifications (guest kicks) while the poller
	// polls.
	Disarm()
}

// OffloadEndpoint is an Endpoint that can take frames with offloads still
// pending, saving the switch the work (and, for TSO, the frames).
type OffloadEndpoint interface {
	Endpoint
	// AcceptsOffload reports whether DeliverOffload takes a frame with
	// off pending now (what a guest negotiated changes as it resets). It
	// is called like Deliver.
	AcceptsOffload(off vnet.Offload) bool
	// DeliverOffload is Deliver for a frame with off pending.
	DeliverOffload(frame []byte, off vnet.Offload) bool
}

// KickCounter is an Endpoint that counts the signals on its WaitFD (a
// guest's kicks). Its owner calls CountKicks, like Arm, after a wait in
// which WaitFD became readable, so that the count is read (and cleared)
// once per kick that woke the poller, not once per endpoint on every
// sleep: a poller of many endpoints would otherwise make a system call per
// endpoint each time it goes to sleep. WaitFD must then be edge-triggered
// for the poller, as every WaitFD is: an unread count keeps no poller
// awake.
type KickCounter interface {
	Endpoint
	CountKicks()
}

// RxWaiter is an Endpoint whose receive side may lack buffers for a while
// (a guest's receive ring the driver has not refilled yet). A frame it has
// no room for is held by the switch and delivered, in order, once the
// receiver posts buffers, instead of being dropped; a poller with frames
// held for it can sleep until the receiver says it posted some. All four
// methods are called like Deliver: by any poller, never concurrently for
// one endpoint.
type RxWaiter interface {
	Endpoint
	// RxFull reports whether the last Deliver (or DeliverOffload) that
	// returned false did so only for want of receive buffers, so the
	// frame will fit once the receiver posts more.
	RxFull() bool
	// RxWaitFD is the file descriptor that becomes readable when the
	// receiver posts buffers while ArmRx is in effect; -1 if none (the
	// poller then polls for them).
	RxWaitFD() int
	// ArmRx asks the receiver to signal RxWaitFD when it posts buffers
	// beyond those it had when a frame last found too few, and reports
	// whether it has posted some since (the poller then retries rather
	// than sleeps).
	ArmRx() bool
	// DisarmRx turns that signal off again.
	DisarmRx()
}

// TxCompleter is an Endpoint whose sender learns of finished
// transmissions (a guest's transmit interrupt) from CompleteTx rather
// than from Transmit itself: the poller calls CompleteTx, on the owning
// poller, after each Transmit call once it has delivered and flushed that
// batch, with no destination's lock held.
type TxCompleter interface {
	Endpoint
	// CompleteTx notifies the sender of the transmissions Transmit
	// returned, if it asked for that.
	CompleteTx()
}
