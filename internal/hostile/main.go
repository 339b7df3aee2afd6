//go:build linux && amd64

// Command hostile is a hostile tenant: run as root inside a stock-kernel
// guest of colibri (it is a static binary in the KVM test's initrd), it
// takes the virtio-pci devices (net, blk, rng) away from their drivers,
// maps their BAR 0 through sysfs and attacks them for a bounded time, the
// same way for the same seed:
//
//   - the transport: device_status written out of order, queue sizes and
//     registers written when the rules forbid it, read-only registers,
//     out-of-range queue selectors and MSI-X vectors, random writes over
//     the BAR and the configuration space, MSI-X tables pointing
//     anywhere, the BAR moved onto a neighbour device, RAM or nowhere,
//     kick storms, resets with requests in flight, activation churn;
//   - the rings: descriptor loops, nested, looping, chained and huge
//     indirect tables, lengths near 4 GiB, buffers and tables outside
//     RAM, chains longer than 4 GiB, index jumps, heads and next indices
//     out of range, rings outside RAM, misaligned or overlapping, used
//     rings the guest maps read-only or keeps in its reserved VGA window;
//   - each device's requests: malformed and spoofed frames, bad control
//     commands, receive buffers the device may only read, bad disk
//     requests.
//
// Each attack has an expected outcome (the device marks itself as
// needing a reset, the write has no effect, the device keeps working),
// checked from inside the guest; a broken expectation is a miss. Plain
// requests between the attacks check the devices still work and never
// write outside their buffers. A canary (pages filled with a pattern and
// never given to a device, though MSI-X messages are aimed at them) is
// checked at the end. Then the drivers are bound again, and virtio-rng
// must give bytes, virtio-blk its serial and virtio-net an interface
// after the reset, which shows NEEDS_RESET recovered.
//
// It prints one line the KVM test parses:
//
//	hostile: summary seed=N secs=S attacks=N misses=N setup_failures=N canary=intact kinds=... net=... blk=... rng=...
//
// kinds lists name:runs:broke:miss:inconclusive; each device lists
// attacks, needs_reset (seen by the guest), refused (writes the
// transport must refuse), errors (requests the device must fail), valid
// (plain requests that worked of those tried), spoofed and
// rx_unanswered. Then, after rebinding:
//
//	hostile: rebind rng=ok blk=ok net=ok
package main

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	seed := flag.Uint64("seed", 1, "seed of the attacks' choices")
	duration := flag.Duration("duration", 40*time.Second, "how long to attack (at least one round of every kind runs)")
	ip := flag.String("ip", "10.0.0.3", "this guest's IPv4 address, for ARP requests")
	peer := flag.String("peer", "10.0.0.1", "an IPv4 address on the switch that answers ARP")
	only := flag.String("devices", "net,blk,rng", "the device kinds to attack")
	rebind := flag.Bool("rebind", true, "bind the drivers again at the end")
	sniffFor := flag.String("sniff", "", "do not attack: count received frames whose source MAC is none of these (comma-separated) until SIGTERM")
	flag.Parse()
	if *sniffFor != "" {
		if err := sniff(*sniffFor); err != nil {
			fmt.Printf("hostile: error: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*seed, *duration, *ip, *peer, *only, *rebind); err != nil {
		fmt.Printf("hostile: error: %v\n", err)
		os.Exit(1)
	}
}

func parseIP(s string) ([4]byte, error) {
	ip := net.ParseIP(s).To4()
	if ip == nil {
		return [4]byte{}, fmt.Errorf("%q is not an IPv4 address", s)
	}
	return [4]byte(ip), nil
}

func run(seed uint64, duration time.Duration, ipS, peerS, only string, rebind bool) error {
	a := newAttacker(seed)
	var err error
	if a.ip, err = parseIP(ipS); err != nil {
		return err
	}
	if a.peer, err = parseIP(peerS); err != nil {
		return err
	}
	if a.ram, err = systemRAM(); err != nil {
		return err
	}
	a.ramEnd = a.ram[len(a.ram)-1].end
	found, err := findVirtio()
	if err != nil {
		return err
	}
	if a.arena, err = newArena(arenaPages); err != nil {
		return err
	}
	a.takeCanary(seed)
	for _, kind := range []string{"net", "blk", "rng"} {
		p := found[kind]
		if p == nil || !strings.Contains(","+only+",", ","+kind+",") {
			continue
		}
		if err := p.take(); err != nil {
			return err
		}
		if err := a.addDevice(kind, p); err != nil {
			return err
		}
	}
	if len(a.devs) == 0 {
		return fmt.Errorf("no virtio device to attack (found %d)", len(found))
	}
	fmt.Printf("hostile: RAM ends at %#x; attacking %d devices for %v, seed %d\n", a.ramEnd, len(a.devs), duration, seed)
	a.attack(duration)
	fmt.Println(a.finish(seed))
	if rebind {
		fmt.Println("hostile: rebind " + a.rebind())
	}
	return nil
}

// arenaPages is what the attacker locks: 4 canary pages, and 9 pages for
// each of up to 3 queues of 3 devices (3 for the rings, 2 for indirect
// tables, 4 for buffers: the receive check maps descriptor slots to
// pages).
const arenaPages = 4 + 3*3*(3+2+4)

func newAttacker(seed uint64) *attacker {
	return &attacker{rnd: rand.New(rand.NewPCG(seed, 0x686f7374696c65)), kinds: map[string]*kindStats{},
		devMem: "/dev/mem", protect: protect}
}

// takeCanary takes the canary pages from the arena and fills them.
func (a *attacker) takeCanary(seed uint64) {
	a.canary = nil
	for i := 0; i < 4; i++ {
		p := a.arena.take()
		fillCanary(p, seed, i)
		a.canary = append(a.canary, p)
	}
}

// addDevice resets the function, reads its queues and features, and
// gives it rings from the arena.
func (a *attacker) addDevice(kind string, p *pciDev) error {
	if p.msix == 0 {
		if p.msix = p.findCap(0x11); p.msix == 0 {
			return fmt.Errorf("%s: no MSI-X capability", p.addr)
		}
	}
	d := &vdev{pciDev: p, kind: kind, st: &devStats{}}
	if !d.reset() {
		return fmt.Errorf("%s (%s): does not reset", kind, p.addr)
	}
	d.nq = int(d.cc(ccNumQueues, 2))
	if d.nq < 1 || d.nq > 3 {
		return fmt.Errorf("%s: %d queues", kind, d.nq)
	}
	for q := 0; q < d.nq; q++ {
		d.setCC(ccQueueSel, 2, uint64(q))
		d.qmax = append(d.qmax, uint16(d.cc(ccQueueSize, 2)))
		d.rings = append(d.rings, newRing(a.arena, 2, 4))
	}
	d.offered = d.features()
	if kind == "net" {
		for i := range d.mac {
			d.mac[i] = byte(d.r(offDevice+uintptr(i), 1))
		}
	}
	fmt.Printf("hostile: %s at %s: BAR 0 %#x, %d queues (max %v), features %#x, %d MSI-X vectors\n",
		kind, p.addr, p.barPA, d.nq, d.qmax, d.offered, d.vectors())
	a.devs = append(a.devs, d)
	return nil
}

// attack runs rounds of every attack on every device it applies to, in
// shuffled order, until duration has passed (the first round always
// completes).
func (a *attacker) attack(duration time.Duration) {
	start := time.Now()
	a.start = start
	list := catalogue()
	for round := 0; round == 0 || time.Since(start) < duration; round++ {
		var plan []func()
		for _, t := range list {
			for _, d := range a.devs {
				if t.applies(d) {
					t, d := t, d
					plan = append(plan, func() {
						if d.dead {
							return
						}
						a.kind(t.name).n++
						d.st.attacks++
						a.attacks++
						t.run(a, d, t.name)
					})
				}
			}
		}
		a.rnd.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
		for _, f := range plan {
			if round > 0 && time.Since(start) >= duration {
				break
			}
			f()
		}
		fmt.Printf("hostile: round %d done at %.1fs, %d attacks, %d misses\n", round, time.Since(start).Seconds(), a.attacks, len(a.misses))
	}
}

// finish leaves every device reset with its MSI-X off (before the
// drivers return), checks the canary and returns the summary line.
func (a *attacker) finish(seed uint64) string {
	secs := time.Since(a.start).Seconds()
	for _, d := range a.devs {
		for v := 0; v < d.vectors(); v++ {
			d.w(uintptr(offMSIX+16*v+12), 4, 1)
		}
		_ = d.cfgWrite(int64(d.msix)+2, 2, 0)
		if !d.reset() {
			d.dead = true
		}
	}
	canary := "intact"
	for i, p := range a.canary {
		if !checkCanary(p, seed, i) {
			canary = "changed"
		}
	}
	dead := "none"
	var deadKinds []string
	for _, d := range a.devs {
		if d.dead {
			deadKinds = append(deadKinds, d.kind)
		}
	}
	if len(deadKinds) > 0 {
		dead = strings.Join(deadKinds, "+")
	}
	line := fmt.Sprintf("hostile: summary seed=%d secs=%.1f attacks=%d misses=%d setup_failures=%d canary=%s dead=%s kinds=%s",
		seed, secs, a.attacks, len(a.misses), a.setupFailures, canary, dead, formatKinds(a.kinds))
	for _, d := range a.devs {
		line += fmt.Sprintf(" %s=%s", d.kind, d.st)
	}
	return line
}

// fillCanary writes page i's pattern, which depends on the seed.
func fillCanary(p *page, seed uint64, i int) {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	for j := range p.b {
		p.b[j] = byte(r.Uint32())
	}
}

func checkCanary(p *page, seed uint64, i int) bool {
	want := make([]byte, pageSize)
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	for j := range want {
		want[j] = byte(r.Uint32())
	}
	return bytes.Equal(p.b, want)
}

// rebind gives every device back to virtio-pci and checks each works
// after the reset: virtio-rng gives bytes, virtio-blk its serial (a
// GET_ID request), virtio-net an interface.
func (a *attacker) rebind() string {
	var out []string
	for _, d := range a.devs {
		res := "ok"
		if err := d.give(); err != nil {
			res = "bind-failed"
		} else {
			switch d.kind {
			case "rng":
				res = checkRNG()
			case "blk":
				res = checkBlk()
			case "net":
				if !waitFor(20*time.Second, func() bool { _, err := os.Stat("/sys/class/net/eth0"); return err == nil }) {
					res = "no-eth0"
				}
			}
		}
		out = append(out, d.kind+"="+res)
	}
	return strings.Join(out, " ")
}

// checkRNG reads 32 bytes from /dev/hwrng (the kernel selects the
// virtio-rng again when it comes back), within 20 seconds.
func checkRNG() string {
	done := make(chan string, 1)
	go func() {
		if !waitFor(10*time.Second, func() bool {
			b, err := os.ReadFile("/sys/class/misc/hw_random/rng_current")
			return err == nil && strings.HasPrefix(string(b), "virtio_rng")
		}) {
			done <- "not-selected"
			return
		}
		f, err := os.Open("/dev/hwrng")
		if err != nil {
			done <- "no-hwrng"
			return
		}
		defer f.Close()
		b := make([]byte, 32)
		n, err := f.Read(b)
		if err != nil || n == 0 || bytes.Count(b[:n], []byte{0}) == n {
			done <- "read-failed"
			return
		}
		done <- "ok"
	}()
	select {
	case r := <-done:
		return r
	case <-time.After(20 * time.Second):
		return "read-hung"
	}
}

// checkBlk waits for the disk to come back and reads its serial.
func checkBlk() string {
	var serial string
	if !waitFor(20*time.Second, func() bool {
		m, _ := filepath.Glob("/sys/block/vd*/serial")
		if len(m) == 0 {
			return false
		}
		b, err := os.ReadFile(m[0])
		serial = strings.TrimSpace(string(b))
		return err == nil && serial != ""
	}) {
		return "no-disk"
	}
	if !strings.HasPrefix(serial, "colibri-disk") {
		return "serial-" + serial
	}
	return "ok"
}
