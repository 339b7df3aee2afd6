package host

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/internal/logattr"
	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/netstack/afxdp"
	"github.com/colibrivm/colibri/vmm"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"
)

// datapath is a host's netstack: the Stack with its pollers, the switches,
// their uplinks, and the guests' ports.
type datapath struct {
	log      *slog.Logger
	stack    *netstack.Stack
	switches map[string]*netstack.Switch
	xdps     map[string]*afxdp.Socket
	// closers release what was opened, run in reverse order by close.
	closers []func() error
}

// newDatapath creates a Stack whose pollers run on pollers.Cores (one
// unpinned poller when there are none). Nothing runs until the stack
// starts.
func newDatapath(pollers spec.Pollers, log *slog.Logger) (*datapath, error) {
	stack, err := netstack.New(stackConfig(pollers, log))
	if err != nil {
		return nil, fmt.Errorf("netstack: %w", err)
	}
	d := &datapath{log: log, stack: stack, switches: map[string]*netstack.Switch{}, xdps: map[string]*afxdp.Socket{}}
	d.closers = append(d.closers, stack.Close)
	return d, nil
}

// stackConfig is the netstack configuration of the file's pollers: a spin
// of 0 never spins, a longer one bounds the adaptive spin (starting from
// the datapath's default minimum, or from the spin itself if shorter); a
// transmit notice delay of 0 sends every notice at once.
func stackConfig(pollers spec.Pollers, log *slog.Logger) netstack.Config {
	cfg := netstack.Config{PollerCores: pollers.Cores, Logger: log}
	switch s := pollers.Spin; {
	case s == nil:
	case *s == 0:
		cfg.NoSpin = true
	default:
		cfg.IdleAfter = min(netstack.DefaultIdleAfter, *s)
		cfg.MaxIdleAfter = *s
	}
	if d := pollers.TxNoticeDelay; d != nil {
		cfg.TxNoticeDelay = *d
		if *d == 0 {
			cfg.TxNoticeDelay = -1 // netstack: no delay
		}
	}
	return cfg
}

// addSwitch creates a switch with its uplinks.
func (d *datapath) addSwitch(s spec.Switch) error {
	sw := netstack.NewSwitch(s.Name)
	if err := d.stack.AddSwitch(sw); err != nil {
		return fmt.Errorf("switch %s: %w", s.Name, err)
	}
	d.switches[s.Name] = sw
	for _, u := range s.Uplinks {
		var ep netstack.Endpoint
		var portName string
		switch {
		case u.TAP != "":
			tap, err := netstack.OpenTAP(u.TAP)
			if err != nil {
				return fmt.Errorf("switch %s: uplink tap %s: %w", s.Name, u.TAP, err)
			}
			d.closers = append(d.closers, tap.Close)
			ep, portName = tap, "tap:"+u.TAP
		case u.XDP != "":
			x, err := afxdp.Open(u.XDP, afxdp.Options{})
			if err != nil {
				return fmt.Errorf("switch %s: uplink xdp %s: %w", s.Name, u.XDP, err)
			}
			d.closers = append(d.closers, x.Close)
			d.xdps[u.XDP] = x
			ep, portName = x, "xdp:"+u.XDP
		default:
			return fmt.Errorf("switch %s: an uplink needs tap or xdp", s.Name)
		}
		port, err := sw.AddPort(portName)
		if err != nil {
			return fmt.Errorf("switch %s: %w", s.Name, err)
		}
		// An uplink leads to a network of many hosts.
		port.SetLearnLimit(uplinkLearnLimit)
		if err := port.SetEndpoints([]netstack.Endpoint{ep}); err != nil {
			return fmt.Errorf("switch %s: port %s: %w", s.Name, portName, err)
		}
		// Detach before the endpoint closes (closers run in reverse).
		d.closers = append(d.closers, func() error { return port.SetEndpoints(nil) })
	}
	return nil
}

// uplinkLearnLimit is how many addresses an uplink port may have learned.
const uplinkLearnLimit = 4096

// guestPort is the switch port of one guest NIC, bound to the NIC's MAC:
// frames the guest sends from any other source are dropped (counted as
// spoofed), so a guest can neither take a neighbour's address nor fill
// the switch's table.
type guestPort struct {
	log  *slog.Logger
	port *netstack.Port
	mac  net.HardwareAddr
}

// addGuestPort adds a port named vm/ethI to the switch for a NIC with mac.
func (d *datapath) addGuestPort(switchName, vm string, i int, mac net.HardwareAddr) (*guestPort, error) {
	sw := d.switches[switchName]
	if sw == nil {
		return nil, fmt.Errorf("no switch named %q", switchName)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("MAC %v: not a 6-byte Ethernet address", mac)
	}
	port, err := sw.AddPort(fmt.Sprintf("%s/eth%d", vm, i))
	if err != nil {
		return nil, err
	}
	// Bound to its address, which the switch then knows before the
	// guest's first frame.
	if err := port.SetAllowedSources([][6]byte{[6]byte(mac)}); err != nil {
		_ = sw.RemovePort(port)
		return nil, err
	}
	return &guestPort{log: d.log, port: port, mac: mac}, nil
}

// nic returns the vmm NIC whose queue pairs the port serves.
func (g *guestPort) nic(noOffloads bool) vmm.NIC {
	n := vmm.NIC{NoOffloads: noOffloads, Attach: g.attach}
	copy(n.MAC[:], g.mac)
	return n
}

// attach is the NIC's Attach callback: the driver's live queue pairs
// (none on reset). It runs on a vCPU thread or the control queue worker
// and returns once the pollers let go of the old pairs. While the port is
// paused the switch only records them.
func (g *guestPort) attach(pairs []*netdev.QueuePair) {
	eps := make([]netstack.Endpoint, len(pairs))
	for i, p := range pairs {
		eps[i] = p
	}
	if err := g.port.SetEndpoints(eps); err != nil {
		g.log.Error("netstack: attach NIC queues", slog.String("port", g.port.Name()), logattr.Err(err))
	}
}

// setPaused cuts the guest's queues off the pollers (frames to it are
// dropped and counted as paused) or puts back the ones its driver last
// gave.
func (g *guestPort) setPaused(paused bool) error {
	if err := g.port.SetPaused(paused); err != nil {
		return fmt.Errorf("port %s: %w", g.port.Name(), err)
	}
	return nil
}

// isPaused reports whether the port is cut off for a pause.
func (g *guestPort) isPaused() bool { return g.port.Paused() }

// remove takes the port off its switch.
func (g *guestPort) remove() error { return g.port.Switch().RemovePort(g.port) }

// close releases everything in the reverse order of its creation and
// returns the first error.
func (d *datapath) close() error {
	var errs []error
	for i := len(d.closers) - 1; i >= 0; i-- {
		errs = append(errs, d.closers[i]())
	}
	d.closers = nil
	return errors.Join(errs...)
}
