package vmm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/pci"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/blk"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"
	"github.com/colibrivm/colibri/vmm/virtio/rng"
)

// nullPlatform is a pci.Platform whose routes and ioeventfds do nothing.
type nullPlatform struct{}

type nullRoute struct{}

func (nullRoute) Program(pci.MSIMessage) error                { return nil }
func (nullRoute) Fire() error                                 { return nil }
func (nullRoute) EventFD() int                                { return -1 }
func (nullRoute) Close() error                                { return nil }
func (nullPlatform) AllocateMSI() (pci.InterruptRoute, error) { return nullRoute{}, nil }
func (nullPlatform) RegisterIOEvent(uint64, uint32, int) error {
	return nil
}
func (nullPlatform) UnregisterIOEvent(uint64, uint32, int) error   { return nil }
func (nullPlatform) RegisterPortEvent(uint16, uint16, int) error   { return nil }
func (nullPlatform) UnregisterPortEvent(uint16, uint16, int) error { return nil }

// TestDeviceStats: every virtio device gets a line of counters under its
// kind, with its device's request errors; Format mentions only devices
// whose driver misbehaved.
func TestDeviceStats(t *testing.T) {
	mem, err := memory.New(16<<20, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	img := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(img, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := blk.New(blk.Config{Path: img})
	if err != nil {
		t.Fatal(err)
	}
	n, err := netdev.New(netdev.Config{MAC: [6]byte{0x52, 0x54, 0, 0, 0, 1}, Pairs: 1})
	if err != nil {
		t.Fatal(err)
	}
	var ps []*virtio.PCI
	for _, d := range []virtio.Device{n, b, rng.New()} {
		p, err := virtio.NewPCI(d, mem, nullPlatform{})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ps = append(ps, p)
	}
	b.Stats.Errors.Add(3)
	n.Stats.TxMalformed.Add(2)
	n.Stats.CtrlErrors.Add(1)
	// A driver that adds DRIVER without ACKNOWLEDGE to the rng is refused.
	ps[2].BARWrite(0, 0x14, []byte{2})

	var st Stats
	for _, p := range ps {
		st.Devices = append(st.Devices, deviceStats(p))
	}
	var kinds []string
	for _, d := range st.Devices {
		kinds = append(kinds, d.Kind)
	}
	if got := strings.Join(kinds, " "); got != "virtio-net virtio-blk virtio-rng" {
		t.Fatalf("device kinds %q", got)
	}
	if st.Devices[0].Errors != 3 || st.Devices[1].Errors != 3 || st.Devices[2].Transport.RefusedWrites != 1 {
		t.Errorf("device stats %+v", st.Devices)
	}
	out := st.Format()
	for _, want := range []string{"virtio-net:", "virtio-blk:", "virtio-rng:", "1 refused writes"} {
		if !strings.Contains(out, want) {
			t.Errorf("Format lacks %q:\n%s", want, out)
		}
	}
}
