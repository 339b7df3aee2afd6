package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"

	"go.uber.org/zap"

	"github.com/colibrivm/colibri/host/spec"
	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/netstack/afxdp"
	"github.com/colibrivm/colibri/vmm"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"
)

// datapath is the netstack a command builds for its VMs: the Stack with
// its pollers, the switches, their uplinks, and the guests' ports.
type datapath struct {
	log      *zap.Logger
	stack    *netstack.Stack
	switches map[string]*netstack.Switch
	xdps     map[string]*afxdp.Socket
	// closers release what was opened, run in reverse order by close.
	closers []func() error
}

// newDatapath creates a Stack whose pollers run on cores (one unpinned
// poller when cores is empty). Nothing runs until start.
func newDatapath(cores []int, log *zap.Logger) (*datapath, error) {
	stack, err := netstack.New(netstack.Config{PollerCores: cores, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("netstack: %w", err)
	}
	d := &datapath{log: log, stack: stack, switches: map[string]*netstack.Switch{}, xdps: map[string]*afxdp.Socket{}}
	d.closers = append(d.closers, stack.Close)
	return d, nil
}

// addSwitch creates a switch with its uplinks.
func (d *datapath) addSwitch(name string, uplinks []spec.Uplink) error {
	sw := netstack.NewSwitch(name)
	if err := d.stack.AddSwitch(sw); err != nil {
		return fmt.Errorf("switch %s: %w", name, err)
	}
	d.switches[name] = sw
	for _, u := range uplinks {
		var ep netstack.Endpoint
		var portName string
		switch {
		case u.TAP != "":
			tap, err := netstack.OpenTAP(u.TAP)
			if err != nil {
				return fmt.Errorf("switch %s: uplink tap %s: %w", name, u.TAP, err)
			}
			d.closers = append(d.closers, tap.Close)
			ep, portName = tap, "tap:"+u.TAP
		case u.XDP != "":
			x, err := afxdp.Open(u.XDP, afxdp.Options{})
			if err != nil {
				return fmt.Errorf("switch %s: uplink xdp %s: %w", name, u.XDP, err)
			}
			d.closers = append(d.closers, x.Close)
			d.xdps[u.XDP] = x
			ep, portName = x, "xdp:"+u.XDP
		default:
			return fmt.Errorf("switch %s: an uplink needs tap or xdp", name)
		}
		port, err := sw.AddPort(portName)
		if err != nil {
			return fmt.Errorf("switch %s: %w", name, err)
		}
		if err := port.SetEndpoints([]netstack.Endpoint{ep}); err != nil {
			return fmt.Errorf("switch %s: port %s: %w", name, portName, err)
		}
		// Detach before the endpoint closes (closers run in reverse).
		d.closers = append(d.closers, func() error { return port.SetEndpoints(nil) })
	}
	return nil
}

// guestNIC adds a port named vm/ethI to the switch and returns the NIC
// whose queue pairs the port serves once the guest's driver is up.
func (d *datapath) guestNIC(switchName, vm string, i int, mac net.HardwareAddr) (vmm.NIC, error) {
	sw := d.switches[switchName]
	if sw == nil {
		return vmm.NIC{}, fmt.Errorf("no switch named %q", switchName)
	}
	if len(mac) != 6 {
		return vmm.NIC{}, fmt.Errorf("MAC %v: not a 6-byte Ethernet address", mac)
	}
	port, err := sw.AddPort(fmt.Sprintf("%s/eth%d", vm, i))
	if err != nil {
		return vmm.NIC{}, err
	}
	// The switch knows where the guest is before its first frame.
	if err := sw.Learn(mac, port); err != nil {
		return vmm.NIC{}, err
	}
	nic := vmm.NIC{Attach: func(pairs []*netdev.QueuePair) {
		eps := make([]netstack.Endpoint, len(pairs))
		for i, p := range pairs {
			eps[i] = p
		}
		if err := port.SetEndpoints(eps); err != nil {
			d.log.Error("netstack: attach NIC queues", zap.String("port", port.Name()), zap.Error(err))
		}
	}}
	copy(nic.MAC[:], mac)
	d.closers = append(d.closers, func() error { return port.SetEndpoints(nil) })
	return nic, nil
}

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

// netSpec is boot's --net tap=NAME[,mac=MAC].
type netSpec struct {
	tap string
	mac net.HardwareAddr
}

// parseNet parses --net tap=NAME[,mac=MAC]; a missing MAC is a random
// locally administered unicast one.
func parseNet(s string) (netSpec, error) {
	var n netSpec
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return n, fmt.Errorf("--net %q: want tap=NAME[,mac=MAC]", s)
		}
		switch k {
		case "tap":
			if len(v) >= 16 || strings.ContainsAny(v, "/ \t") {
				return n, fmt.Errorf("--net %q: %q is not an interface name (at most 15 characters, no '/' or spaces)", s, v)
			}
			n.tap = v
		case "mac":
			mac, err := net.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				return n, fmt.Errorf("--net %q: %q is not a MAC address like 52:54:00:12:34:56", s, v)
			}
			if mac[0]&1 != 0 {
				return n, fmt.Errorf("--net %q: %s is a multicast address; a NIC needs a unicast one", s, v)
			}
			n.mac = mac
		default:
			return n, fmt.Errorf("--net %q: unknown key %q (want tap=NAME[,mac=MAC])", s, k)
		}
	}
	if n.tap == "" {
		return n, fmt.Errorf("--net %q: tap=NAME is required", s)
	}
	if n.mac == nil {
		n.mac = make(net.HardwareAddr, 6)
		_, _ = rand.Read(n.mac[3:])
		copy(n.mac, []byte{0x52, 0x54, 0x00})
	}
	return n, nil
}
