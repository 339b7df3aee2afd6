package netstack

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Stats is a snapshot of a Stack's counters, for `--stats` (WriteText)
// and `--stats-json` (WriteJSON).
type Stats struct {
	Pollers  []PollerStats `json:"pollers"`
	Switches []SwitchStats `json:"switches"`
}

// PollerStats are one poller's counters.
type PollerStats struct {
	Index int `json:"index"`
	// Core is the CPU the poller is pinned to, -1 if unpinned.
	Core int `json:"core"`
	// TID is the poller thread's id, 0 when not running.
	TID       int `json:"tid"`
	Endpoints int `json:"endpoints"`
	// Polls counts passes over the poller's endpoints; EmptyPolls those
	// that found no frame.
	Polls      uint64 `json:"polls"`
	EmptyPolls uint64 `json:"empty_polls"`
	// Frames counts frames taken from endpoints' transmit sides.
	Frames uint64 `json:"frames"`
	// Sleeps counts waits in epoll_wait and Wakeups returns from them
	// (Sleeps > Wakeups while the poller sleeps); ControlWakeups counts
	// the wake-ups the stack caused (endpoints changed, stop) rather than
	// an endpoint's kick alone.
	Sleeps         uint64 `json:"sleeps"`
	Wakeups        uint64 `json:"wakeups"`
	ControlWakeups uint64 `json:"control_wakeups"`
	// ArmRaces counts sleeps abandoned because Arm found frames.
	ArmRaces uint64 `json:"arm_races"`
	// SleepNanos is the total time spent in epoll_wait.
	SleepNanos uint64 `json:"sleep_ns"`
	WaitErrors uint64 `json:"wait_errors"`
	// Shared is true for a poller that yields its core when it finds
	// nothing (Config.Sharing); IdleSpinNanos is how long it now polls
	// without frames before it sleeps (adapted between IdleAfter and
	// MaxIdleAfter).
	Shared        bool  `json:"shared"`
	IdleSpinNanos int64 `json:"idle_spin_ns"`
}

// SwitchStats are one switch's counters.
type SwitchStats struct {
	Name  string      `json:"name"`
	MACs  int         `json:"macs"`
	Ports []PortStats `json:"ports"`
}

// PortStats are one port's counters. Rx is what the switch received from
// the port (what the guest or host sent), Tx what it delivered to it.
type PortStats struct {
	Switch string `json:"switch"`
	Name   string `json:"name"`
	Queues int    `json:"queues"`
	// Paused is true while the port is paused (Port.SetPaused).
	Paused bool `json:"paused"`
	// Bound is true when the port is bound to its source addresses
	// (Port.SetAllowedSources).
	Bound bool `json:"bound"`
	// Learned is how many addresses the switch has learned on the port
	// (not counting a bound port's pinned ones), LearnLimit the most it
	// may, LearnRefused how many frames' sources were not learned
	// because of the limit (or a pinned or full bucket).
	Learned      int    `json:"learned"`
	LearnLimit   int    `json:"learn_limit"`
	LearnRefused uint64 `json:"learn_refused"`
	RxPackets    uint64 `json:"rx_packets"`
	RxBytes      uint64 `json:"rx_bytes"`
	TxPackets    uint64 `json:"tx_packets"`
	TxBytes      uint64 `json:"tx_bytes"`
	// SoftOffload counts the frames with offloads pending that the port
	// could not take and the switch finished in software before delivery
	// (one per original frame, however many segments it became).
	SoftOffload uint64 `json:"soft_offload"`
	// Held counts frames that found the port's receive side out of
	// buffers and waited for it in the switch (RxWaiter) rather than
	// being dropped; those that found the hold queue full are NoRoom
	// drops, those that waited too long Expired ones.
	Held  uint64    `json:"held"`
	Drops DropStats `json:"drops"`
}

// DropStats count dropped frames by cause.
type DropStats struct {
	// NoRoom: the destination endpoint's receive side was full (for an
	// RxWaiter: and its hold queue too), or refused the frame for good.
	NoRoom uint64 `json:"no_room"`
	// Expired: a frame waited in a hold queue for 500 ms and the
	// receiver still had no buffers for it.
	Expired uint64 `json:"expired"`
	// PortDown: the destination port had no endpoints.
	PortDown uint64 `json:"port_down"`
	// Paused: the destination port was paused.
	Paused uint64 `json:"paused"`
	// Runt: a frame shorter than an Ethernet header came from the port.
	Runt uint64 `json:"runt"`
	// BadSource: a frame with a multicast source MAC came from the port.
	BadSource uint64 `json:"bad_source"`
	// Spoofed: a frame from a port bound to its sources came with another
	// source MAC.
	Spoofed uint64 `json:"spoofed"`
	// Filtered: a frame's destination was learned on the port it came
	// from (no hairpin).
	Filtered uint64 `json:"filtered"`
	// BadOffload: a frame from the port asked for an offload its headers
	// do not allow (a checksum outside it, TSO on a non-TCP frame).
	BadOffload uint64 `json:"bad_offload"`
}

// Total returns the sum of all drops.
func (d DropStats) Total() uint64 {
	return d.NoRoom + d.Expired + d.PortDown + d.Paused + d.Runt + d.BadSource + d.Spoofed + d.Filtered + d.BadOffload
}

// Stats returns a snapshot of the switch's counters.
func (sw *Switch) Stats() SwitchStats {
	s := SwitchStats{Name: sw.name, MACs: sw.MACs()}
	for _, p := range *sw.ports.Load() {
		s.Ports = append(s.Ports, p.Stats())
	}
	return s
}

// Stats returns a snapshot of the stack's counters: every poller and every
// attached switch.
func (st *Stack) Stats() Stats {
	var s Stats
	st.mu.Lock()
	switches := append([]*Switch(nil), st.switches...)
	owned := make([]int, len(st.pollers))
	for i, p := range st.pollers {
		owned[i] = p.nOwned
	}
	st.mu.Unlock()
	for i, p := range st.pollers {
		c := &p.cnt
		s.Pollers = append(s.Pollers, PollerStats{
			Index: p.index, Core: p.core, TID: int(p.tid.Load()), Endpoints: owned[i],
			Polls: c.polls.Load(), EmptyPolls: c.emptyPolls.Load(), Frames: c.frames.Load(),
			Sleeps: c.sleeps.Load(), Wakeups: c.wakeups.Load(), ControlWakeups: c.ctlWakeups.Load(),
			ArmRaces: c.armRaces.Load(), SleepNanos: c.sleepNanos.Load(), WaitErrors: c.waitErrors.Load(),
			Shared: p.shared, IdleSpinNanos: c.spin.Load(),
		})
	}
	for _, sw := range switches {
		s.Switches = append(s.Switches, sw.Stats())
	}
	return s
}

// WriteJSON writes s as indented JSON.
func (s Stats) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return fmt.Errorf("write netstack stats as JSON: %w", err)
	}
	return nil
}

// WriteText writes s as two aligned tables, pollers then ports.
func (s Stats) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "poller\tcore\tendpoints\tpolls\tempty\tframes\tsleeps\twakeups\tctl-wakeups\tarm-races\tslept\t")
	for _, p := range s.Pollers {
		core := "-"
		if p.Core >= 0 {
			core = fmt.Sprint(p.Core)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", p.Index, core, p.Endpoints,
			p.Polls, p.EmptyPolls, p.Frames, p.Sleeps, p.Wakeups, p.ControlWakeups, p.ArmRaces,
			time.Duration(p.SleepNanos).Round(time.Microsecond))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "port\tstate\tqueues\trx-pkts\trx-bytes\ttx-pkts\ttx-bytes\tsoft-offload\theld\tno-room\texpired\tport-down\tpaused\trunt\tbad-src\tspoofed\tfiltered\tbad-offload\tlearned\t")
	for _, sw := range s.Switches {
		for _, p := range sw.Ports {
			d := p.Drops
			state := "up"
			if p.Bound {
				state = "bound"
			}
			switch {
			case p.Paused:
				state = "paused"
			case p.Queues == 0:
				state = "down"
			}
			fmt.Fprintf(tw, "%s/%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", sw.Name, p.Name, state, p.Queues,
				p.RxPackets, p.RxBytes, p.TxPackets, p.TxBytes, p.SoftOffload, p.Held, d.NoRoom, d.Expired, d.PortDown, d.Paused, d.Runt, d.BadSource, d.Spoofed, d.Filtered, d.BadOffload, p.Learned)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write netstack stats: %w", err)
	}
	return nil
}
