//go:build linux && amd64

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/vnet"
	"github.com/colibrivm/colibri/netstack"
	"github.com/colibrivm/colibri/netstack/netstacktest"
	"github.com/colibrivm/colibri/vmm/memory"
	"github.com/colibrivm/colibri/vmm/pci"
	"github.com/colibrivm/colibri/vmm/virtio"
	"github.com/colibrivm/colibri/vmm/virtio/blk"
	"github.com/colibrivm/colibri/vmm/virtio/netdev"
	"github.com/colibrivm/colibri/vmm/virtio/rng"
)

// inproc reaches colibri's virtio-pci transport directly: the attacker's
// register accesses become BARRead/BARWrite calls and configuration
// space Read/Write, as the VMM's MMIO and PCI dispatch would make them.
type inproc struct{ p *virtio.PCI }

func (x inproc) barRead(off uintptr, width int) uint64 {
	var b [8]byte
	x.p.BARRead(0, uint64(off), b[:width])
	return binary.LittleEndian.Uint64(b[:])
}

func (x inproc) barWrite(off uintptr, width int, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	x.p.BARWrite(0, uint64(off), b[:width])
}

func (x inproc) portWrite(off int64, width int, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	x.p.BARWrite(1, uint64(off), b[:width])
}

func (x inproc) cfgRead(off int64, b []byte) error  { x.p.Config().Read(uint32(off), b); return nil }
func (x inproc) cfgWrite(off int64, b []byte) error { x.p.Config().Write(uint32(off), b); return nil }

// platform's ioeventfds behave like KVM's (an address taken twice is
// EEXIST), shared by the devices, as one VM's are.
type platform struct {
	mu     sync.Mutex
	events map[uint64]int
}

type route struct{}

func (route) Program(pci.MSIMessage) error { return nil }
func (route) Fire() error                  { return nil }
func (route) EventFD() int                 { return -1 }
func (route) Close() error                 { return nil }

func (*platform) AllocateMSI() (pci.InterruptRoute, error) { return route{}, nil }

func (p *platform) RegisterIOEvent(addr uint64, _ uint32, fd int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.events[addr]; dup {
		return unix.EEXIST
	}
	p.events[addr] = fd
	return nil
}

func (p *platform) UnregisterIOEvent(addr uint64, _ uint32, _ int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.events, addr)
	return nil
}

// Port ioeventfds are kept above every MMIO address.
func (p *platform) RegisterPortEvent(port, data uint16, fd int) error {
	return p.RegisterIOEvent(1<<63|uint64(port)<<16|uint64(data), 2, fd)
}

func (p *platform) UnregisterPortEvent(port, data uint16, fd int) error {
	return p.UnregisterIOEvent(1<<63|uint64(port)<<16|uint64(data), 2, fd)
}

// peer is the switch and the neighbour at once: it serves the NIC's
// queue pairs as a poller does and answers ARP requests for its address.
type peer struct {
	mu    sync.Mutex
	pairs []*netdev.QueuePair
	mac   [6]byte
	ip    [4]byte
}

func (p *peer) attach(pairs []*netdev.QueuePair) {
	p.mu.Lock()
	p.pairs = pairs
	p.mu.Unlock()
}

func (p *peer) serve(stop <-chan struct{}) {
	var replies [][]byte
	for {
		select {
		case <-stop:
			return
		default:
		}
		p.mu.Lock()
		for _, q := range p.pairs {
			replies = replies[:0]
			q.Transmit(64, func(f []byte, _ vnet.Offload) {
				if len(f) >= arpFrame && binary.BigEndian.Uint16(f[12:]) == ethARP &&
					binary.BigEndian.Uint16(f[20:]) == 1 && bytes.Equal(f[38:42], p.ip[:]) {
					r := make([]byte, arpFrame)
					copy(r[0:6], f[6:12])
					copy(r[6:12], p.mac[:])
					copy(r[12:22], f[12:22])
					binary.BigEndian.PutUint16(r[20:], 2)
					copy(r[22:28], p.mac[:])
					copy(r[28:32], p.ip[:])
					copy(r[32:42], f[22:32])
					replies = append(replies, r)
				}
			})
			for _, r := range replies {
				q.Deliver(r)
			}
			q.Flush()
		}
		p.mu.Unlock()
		time.Sleep(20 * time.Microsecond)
	}
}

// Longer in-process runs, to hunt: go test ./internal/hostile -run InProcess -args -inproc.duration 60s -inproc.seed 7
var (
	inprocDuration = flag.Duration("inproc.duration", 0, "TestAttacksInProcess: attack for this long (0: one round)")
	inprocSeed     = flag.Uint64("inproc.seed", 3, "TestAttacksInProcess: the attacker's seed")
)

const inprocRAM = 256 << 20 // the attacker's guest's memory in the KVM test

// inprocAttacker returns an attacker over guest memory mem (its arena
// at 16 MiB), as the guest's would be but without /dev/mem and mprotect
// (the guest's alone), and the platform its devices share.
func inprocAttacker(t *testing.T, mem *memory.Memory, seed uint64, peer [4]byte) (*attacker, *platform) {
	a := newAttacker(seed)
	a.devMem = ""
	a.protect = func(*page, bool) error { return nil }
	a.ram, a.ramEnd = []ramRange{{1 << 20, inprocRAM}}, inprocRAM
	a.ip, a.peer = [4]byte{10, 0, 0, 3}, peer
	a.arena = &arena{}
	for i := 0; i < arenaPages; i++ {
		pa := uint64(16<<20 + i*pageSize)
		buf, err := mem.Slice(pa, pageSize)
		if err != nil {
			t.Fatal(err)
		}
		a.arena.pages = append(a.arena.pages, &page{b: buf, pa: pa})
	}
	a.takeCanary(seed)
	return a, &platform{events: map[uint64]int{}}
}

// inprocDevice puts dev behind colibri's transport with BAR 0 at bar and
// hands it to the attacker.
func inprocDevice(t *testing.T, a *attacker, mem *memory.Memory, plat *platform, dev virtio.Device, kind string, bar uint64) *virtio.PCI {
	p, err := virtio.NewPCI(dev, mem, plat)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	p.Config().SetBARAddr(0, bar)
	p.Config().Write(4, []byte{2, 0}) // memory decoding on: the kicks get registered
	if err := a.addDevice(kind, &pciDev{addr: kind, barPA: bar, io: inproc{p}}); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAttacksInProcess runs one round of every attack against colibri's
// own virtio-pci transport, virtio-net (served by a fake poller that
// answers ARP), virtio-blk and virtio-rng, over guest memory of the
// attacker's guest's size, without KVM: every expectation the attacker
// checks must hold, and the transport must have refused exactly the
// writes the attacker made to be refused. (MSI-X messages, /dev/mem and
// mprotect are the guest's and are left out here.)
func TestAttacksInProcess(t *testing.T) {
	mem, err := memory.New(inprocRAM, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	img := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(img, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := blk.New(blk.Config{Path: img, Serial: "colibri-disk0"})
	if err != nil {
		t.Fatal(err)
	}
	pr := &peer{mac: [6]byte{0x52, 0x54, 0, 0, 0, 0xc}, ip: [4]byte{10, 0, 0, 1}}
	n, err := netdev.New(netdev.Config{MAC: [6]byte{0x52, 0x54, 0, 0, 0, 0xa}, Pairs: 1, Attach: pr.attach})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	served := make(chan struct{})
	go func() { pr.serve(stop); close(served) }()
	defer func() { close(stop); <-served }()

	seed := *inprocSeed
	a, plat := inprocAttacker(t, mem, seed, pr.ip)
	var transports []*virtio.PCI
	for i, dev := range []virtio.Device{n, b, rng.New()} {
		kind := []string{"net", "blk", "rng"}[i]
		transports = append(transports, inprocDevice(t, a, mem, plat, dev, kind, uint64(0xc0000000+0x8000*i)))
	}
	start := time.Now()
	a.attack(*inprocDuration)
	line := a.finish(seed)
	t.Logf("%d attacks in %v\n%s", a.attacks, time.Since(start).Round(time.Millisecond), line)
	for _, m := range a.misses {
		t.Errorf("miss: %s", m)
	}
	if a.setupFailures != 0 || !strings.Contains(line, " canary=intact dead=none ") {
		t.Errorf("%d setup failures; summary %s", a.setupFailures, line)
	}
	for i, d := range a.devs {
		st := transports[i].Stats()
		if st.RefusedWrites != uint64(d.st.expRefused) || st.NeedsReset < uint64(d.st.needsReset) || d.st.needsReset == 0 {
			t.Errorf("%s: the attacker made %d writes to refuse and saw NEEDS_RESET %d times; the transport refused %d and set it %d times",
				d.kind, d.st.expRefused, d.st.needsReset, st.RefusedWrites, st.NeedsReset)
		}
		if d.st.validN == 0 || d.st.validOK != d.st.validN {
			t.Errorf("%s: %d of %d valid requests worked", d.kind, d.st.validOK, d.st.validN)
		}
	}
	if got, want := b.Stats.Errors.Load(), uint64(a.devs[1].st.expErrors); got < want {
		t.Errorf("virtio-blk counted %d request errors, the attacker made %d bad requests", got, want)
	}
	if got, want := n.Stats.TxMalformed.Load()+n.Stats.CtrlErrors.Load(), uint64(a.devs[0].st.expErrors); got < want {
		t.Errorf("virtio-net counted %d errors, the attacker made %d bad frames and commands", got, want)
	}
}

// TestSourceCheckRace: the attacker's tx-toctou (a full transmit ring
// of one frame whose source address the guest keeps rewriting) against
// colibri's netdev and netstack's switch with a real poller thread, its
// port bound to the guest's MAC, and a neighbour's port: no frame may
// reach the neighbour with the forged source. Before netdev copied a
// frame out of guest memory ahead of the switch, 395 of 13,631 did on
// this project's 2-core machine (the poller and the rewriting on two
// cores; on one core the race is rarer). The spoofed drops show the
// rewriting raced the poller.
func TestSourceCheckRace(t *testing.T) {
	mem, err := memory.New(inprocRAM, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	macA, macC := [6]byte{0x52, 0x54, 0, 0, 0, 0xa}, [6]byte{0x52, 0x54, 0, 0, 0, 0xc}
	st, err := netstack.New(netstack.Config{Pollers: 1, IdleAfter: -1})
	if err != nil {
		t.Fatal(err)
	}
	sw := netstack.NewSwitch("sw0")
	pa, err := sw.AddPort("a")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := sw.AddPort("c")
	if err != nil {
		t.Fatal(err)
	}
	if err := pa.SetAllowedSources([][6]byte{macA}); err != nil {
		t.Fatal(err)
	}
	qc, err := netstacktest.NewQueue(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer qc.Close()
	if err := pc.SetEndpoints([]netstack.Endpoint{qc}); err != nil {
		t.Fatal(err)
	}
	if err := sw.Learn(macC[:], pc); err != nil {
		t.Fatal(err)
	}
	if err := st.AddSwitch(sw); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := netdev.New(netdev.Config{MAC: macA, Pairs: 1, Attach: func(ps []*netdev.QueuePair) {
		eps := make([]netstack.Endpoint, 0, len(ps))
		for _, p := range ps {
			eps = append(eps, p)
		}
		if err := pa.SetEndpoints(eps); err != nil {
			t.Error(err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	a, plat := inprocAttacker(t, mem, 5, [4]byte{10, 0, 0, 1})
	a.peerMAC = macC
	inprocDevice(t, a, mem, plat, n, "net", 0xc0000000)
	total, forged := 0, 0
	for i := 0; i < 20; i++ {
		a.txToctou(a.devs[0], "tx-toctou")
		for _, f := range qc.Take() {
			total++
			if [6]byte(f[6:12]) == forgedMAC {
				forged++
			}
		}
	}
	spoofed := pa.Stats().Drops.Spoofed
	t.Logf("the neighbour got %d frames, %d with the forged source; the switch dropped %d as spoofed", total, forged, spoofed)
	for _, m := range a.misses {
		t.Errorf("miss: %s", m)
	}
	if forged > 0 {
		t.Errorf("%d frames with a forged source reached the neighbour", forged)
	}
	if total == 0 || spoofed == 0 {
		t.Errorf("the race did not run: %d frames delivered, %d dropped as spoofed", total, spoofed)
	}
}
