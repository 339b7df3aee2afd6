package vmm_test

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/colibrivm/colibri/internal/testenv"
	"github.com/colibrivm/colibri/vmm"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"

	"github.com/colibrivm/colibri/internal/vnet"
)

// pairPump stands in for netstack: it drives whatever queue pairs the
// device attached, counting the ARP requests the guest transmits and
// delivering a broadcast frame to the guest on every round.
type pairPump struct {
	mu        sync.Mutex
	pairs     []*netdev.QueuePair
	attaches  []int
	arps      int
	delivered int
}

func (p *pairPump) attach(pairs []*netdev.QueuePair) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pairs = pairs
	p.attaches = append(p.attaches, len(pairs))
}

func (p *pairPump) round(frame []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, q := range p.pairs {
		q.Transmit(64, func(f []byte, _ vnet.Offload) {
			if len(f) >= 14 && binary.BigEndian.Uint16(f[12:]) == 0x0806 {
				p.arps++
			}
		})
	}
	if len(p.pairs) > 0 && p.pairs[0].Deliver(frame) {
		p.delivered++
		p.pairs[0].Flush()
	}
}

// TestKVMNetDevice: the stock kernel's virtio_net drives colibri's
// device: it reads the MAC, uses both queue pairs of a 2-vCPU guest,
// transmits (ARP requests for a ping) and receives (broadcast frames).
func TestKVMNetDevice(t *testing.T) {
	testenv.RequireKVM(t)
	mac := [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	pump := &pairPump{}
	// A broadcast frame of an unused EtherType: the guest counts and drops it.
	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5})
	stop := make(chan struct{})
	during := func(vm *vmm.VM) {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-vm.Done():
				return
			case <-tick.C:
				pump.round(frame)
			}
		}
	}
	cmd := "ip link set eth0 up && ip addr add 10.0.0.1/24 dev eth0; ping -c 2 -w 4 10.0.0.2; sleep 1; " +
		"echo mac=$(cat /sys/class/net/eth0/address) rxq=$(ls -d /sys/class/net/eth0/queues/rx-* | wc -l) " +
		"rx=$(cat /sys/class/net/eth0/statistics/rx_packets) tx=$(cat /sys/class/net/eth0/statistics/tx_packets)"
	out, kind, _ := bootWith(t, vmm.Config{CPUs: 2, NICs: []vmm.NIC{{MAC: mac, Attach: pump.attach}}}, cmd, during)
	close(stop)
	if kind != vmm.ExitPowerOff {
		t.Errorf("VM ended with %v, want power-off", kind)
	}
	if !strings.Contains(out, "mac=52:54:00:12:34:56 rxq=2") {
		t.Errorf("the guest does not see the NIC with its MAC and 2 queue pairs")
	}
	rx, tx := -1, -1
	if i := strings.Index(out, " rx="); i >= 0 {
		_, _ = fmt.Sscanf(out[i:], " rx=%d tx=%d", &rx, &tx)
	}
	pump.mu.Lock()
	defer pump.mu.Unlock()
	t.Logf("attach calls %v, ARP requests seen %d, frames delivered %d, guest rx=%d tx=%d", pump.attaches, pump.arps, pump.delivered, rx, tx)
	if len(pump.attaches) < 2 || pump.attaches[0] != 1 || !containsInt(pump.attaches, 2) {
		t.Errorf("attach calls %v: want 1 pair at DRIVER_OK, then 2 after VQ_PAIRS_SET", pump.attaches)
	}
	if len(pump.attaches) > 0 && pump.attaches[len(pump.attaches)-1] != 0 {
		t.Errorf("attach calls %v: the reset at power-off did not detach the pairs", pump.attaches)
	}
	if pump.arps < 2 {
		t.Errorf("saw %d ARP requests from the guest's ping, want at least 2", pump.arps)
	}
	if rx < 5 {
		t.Errorf("the guest counted %d received frames (%d delivered), want at least 5", rx, pump.delivered)
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
