package vmm

import (
	"fmt"
	"log/slog"

	"github.com/colibrivm/colibri/vmm/pci"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/blk"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"
	"github.com/colibrivm/colibri/vmm/virtio/rng"
)

// createPCIDevices builds the PCI bus with the configured virtio devices.
func (v *VM) createPCIDevices() error {
	bus, err := pci.NewBus(pci.Windows{MMIO32Base: pciMMIOBase, MMIO32Size: pciMMIOSize,
		MMIO64Base: v.mmio64Base(), MMIO64Size: pciMMIO64Size, IOBase: pciIOBase, IOSize: pciIOSize})
	if err != nil {
		return err
	}
	v.pci = bus
	if !v.cfg.NoPCIConf1 {
		v.pio.add(pci.ConfigAddressPort, pci.PortCount, v.pci)
	}
	ioBase, ioSize := v.pci.IOWindow()
	v.pio.add(ioBase, ioSize, v.pci)
	for i, d := range v.cfg.Disks {
		// The serial names the disk by its place, never by its host path.
		cfg := blk.Config{Path: d.Path, ReadOnly: d.ReadOnly, Serial: fmt.Sprintf("colibri-disk%d", i)}
		if d.StopOnError {
			cfg.OnError = func(err error) {
				v.stop(ExitError, fmt.Errorf("disk %d (%s): %w; the VM stopped, as its disk's error policy says, with the request unanswered", i, d.Path, err))
			}
		}
		dev, err := blk.New(cfg)
		if err != nil {
			return fmt.Errorf("disk %d: %w", i, err)
		}
		if err := v.addVirtio(dev); err != nil {
			dev.Close()
			return fmt.Errorf("disk %s: %w", d.Path, err)
		}
	}
	for i, n := range v.cfg.NICs {
		pairs := n.Pairs
		if pairs == 0 {
			pairs = min(v.cfg.CPUs, netdev.MaxPairs)
		}
		dev, err := netdev.New(netdev.Config{MAC: n.MAC, Pairs: pairs, NoOffloads: n.NoOffloads, Attach: n.Attach})
		if err != nil {
			return fmt.Errorf("NIC %d: %w", i, err)
		}
		if err := v.addVirtio(dev); err != nil {
			return fmt.Errorf("NIC %d (%s): %w", i, netdev.FormatMAC(n.MAC), err)
		}
		v.nics = append(v.nics, dev)
	}
	if v.cfg.RNG {
		if err := v.addVirtio(rng.New()); err != nil {
			return fmt.Errorf("virtio-rng: %w", err)
		}
	}
	return nil
}

func (v *VM) addVirtio(dev virtio.Device) error {
	p, err := virtio.NewPCI(dev, v.mem, v)
	if err != nil {
		return err
	}
	v.closers = append(v.closers, p)
	v.virtio = append(v.virtio, p)
	if d, ok := any(p).(pausable); ok {
		v.pausable = append(v.pausable, d)
	}
	slot, err := v.pci.Add(p)
	if err == nil {
		v.log.Debug("virtio device added", slog.Uint64("type", uint64(dev.Type())), slog.Int("slot", slot), slog.Uint64("bar0", p.Config().Mapped(0)))
	}
	return err
}
