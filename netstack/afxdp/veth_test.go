package afxdp

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/vnet"
)

// These tests need root: they make a network namespace and a veth pair
// with one end in it, open a Socket on the host end and talk to UDP
// sockets inside the namespace.

var (
	hostIP = net.IPv4(10, 99, 0, 1).To4()
	peerIP = net.IPv4(10, 99, 0, 2).To4()
)

// requireAFXDP fails the test, saying why, when this process cannot open
// AF_XDP sockets or make network namespaces ('make test' runs it as root
// on a kernel with AF_XDP and installs iproute2).
func requireAFXDP(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test makes a network namespace and a veth pair and attaches XDP: it must run as root")
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("AF_XDP unavailable on this kernel: socket(AF_XDP): %v", err)
	}
	unix.Close(fd)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("iproute2's ip command not found (Debian package iproute2)")
	}
}

// vethNS is a veth pair: host in this namespace, peer in namespace ns
// with address peerIP/24 and a permanent neighbour entry for hostIP.
type vethNS struct {
	ns, host, peer   string
	hostMAC, peerMAC net.HardwareAddr
}

var vethSeq atomic.Int32

func ip(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newVethNS(t *testing.T) *vethNS {
	t.Helper()
	id := fmt.Sprintf("%d%d", os.Getpid()%100000, vethSeq.Add(1))
	v := &vethNS{ns: "cxdp" + id, host: "cxh" + id, peer: "cxp" + id}
	ip(t, "netns", "add", v.ns)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", v.host).Run()
		if out, err := exec.Command("ip", "netns", "del", v.ns).CombinedOutput(); err != nil {
			t.Errorf("remove network namespace %s: %v: %s", v.ns, err, out)
		}
	})
	ip(t, "link", "add", v.host, "type", "veth", "peer", "name", v.peer, "netns", v.ns)
	ip(t, "link", "set", v.host, "up")
	ip(t, "-n", v.ns, "link", "set", "lo", "up")
	ip(t, "-n", v.ns, "addr", "add", peerIP.String()+"/24", "dev", v.peer)
	ip(t, "-n", v.ns, "link", "set", v.peer, "up")

	ifi, err := net.InterfaceByName(v.host)
	if err != nil {
		t.Fatal(err)
	}
	v.hostMAC = ifi.HardwareAddr
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(ip(t, "-n", v.ns, "-j", "link", "show", "dev", v.peer)), &links); err != nil || len(links) != 1 {
		t.Fatalf("parse ip -j link show %s: %v", v.peer, err)
	}
	if v.peerMAC, err = net.ParseMAC(links[0].Address); err != nil {
		t.Fatal(err)
	}
	ip(t, "-n", v.ns, "neigh", "replace", hostIP.String(), "lladdr", v.hostMAC.String(), "dev", v.peer, "nud", "permanent")
	return v
}

// listenUDP opens a UDP socket bound to addr inside the namespace. The
// socket is made on an OS thread moved into the namespace and then
// thrown away (the goroutine exits locked), so no other goroutine ever
// runs in the namespace.
func (v *vethNS) listenUDP(t *testing.T, addr *net.UDPAddr) *net.UDPConn {
	t.Helper()
	type result struct {
		c   *net.UDPConn
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := os.Open("/var/run/netns/" + v.ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", v.ns, err)}
			return
		}
		c, err := net.ListenUDP("udp4", addr)
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("UDP socket in namespace %s: %v", v.ns, r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c
}

// udpFrame builds an Ethernet/IPv4/UDP frame (UDP checksum 0: none).
func udpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	h := f[14:34]
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+8+len(payload)))
	h[8] = 64 // TTL
	h[9] = unix.IPPROTO_UDP
	copy(h[12:16], src.To4())
	copy(h[16:20], dst.To4())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	u := f[34:42]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(f[42:], payload)
	return f
}

// udpPayload returns the payload of a frame if it is IPv4/UDP to dport.
func udpPayload(f []byte, dport uint16) ([]byte, bool) {
	if len(f) < 42 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[14]>>4 != 4 || f[23] != unix.IPPROTO_UDP {
		return nil, false
	}
	ihl := int(f[14]&0xf) * 4
	u := f[14+ihl:]
	if len(u) < 8 || binary.BigEndian.Uint16(u[2:]) != dport {
		return nil, false
	}
	return u[8:binary.BigEndian.Uint16(u[4:])], true
}

// openOn opens a Socket on the host end and closes it when the test ends.
func openOn(t *testing.T, v *vethNS, opts Options) *Socket {
	t.Helper()
	s, err := Open(v.host, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Logf("mode on veth: %s", s.Mode())
	return s
}

func TestVethRxTx(t *testing.T) {
	requireAFXDP(t)
	for _, tc := range []struct {
		name     string
		opts     Options
		wantMode string
	}{
		{"generic", Options{}, "generic/copy+need-wakeup"},
		// veth has native XDP but no zero-copy AF_XDP.
		{"prefer-zero-copy", Options{ZeroCopy: true}, "driver/copy+need-wakeup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVethNS(t)
			s := openOn(t, v, tc.opts)
			if got := s.Mode().String(); got != tc.wantMode {
				t.Errorf("mode %s, want %s", got, tc.wantMode)
			}
			testRX(t, v, s)
			testTX(t, v, s)
			st := s.Stats()
			b, _ := json.Marshal(st)
			t.Logf("stats: %s", b)
			if st.RxInvalidDescs+st.CompInvalidDescs+st.RxBadIndex+st.TxBadIndex+st.CompBadIndex+st.FillBadIndex+st.TxKickErrors != 0 {
				t.Errorf("errors counted: %s", b)
			}
		})
	}
}

// TestVethConcurrentRxTx receives on one goroutine while another sends,
// as two pollers would (run it with -race).
func TestVethConcurrentRxTx(t *testing.T) {
	requireAFXDP(t)
	v := newVethNS(t)
	s := openOn(t, v, Options{})
	t.Run("both", func(t *testing.T) {
		t.Run("rx", func(t *testing.T) { t.Parallel(); testRX(t, v, s) })
		t.Run("tx", func(t *testing.T) { t.Parallel(); testTX(t, v, s) })
	})
}

// testRX sends datagrams from inside the namespace to hostIP and checks
// that Transmit yields each as a frame from the peer's MAC to the host
// end's, byte for byte.
func testRX(t *testing.T, v *vethNS, s *Socket) {
	const n, dport = 200, 9999
	c := v.listenUDP(t, &net.UDPAddr{IP: peerIP, Port: 40000})
	dst := &net.UDPAddr{IP: hostIP, Port: dport}
	before := s.Stats()

	// The first datagram must wake a sleeping poller.
	if s.Arm() {
		t.Log("RX ring not empty before the first datagram (stray frames from the namespace)")
	}
	if _, err := c.WriteToUDP([]byte("rx 0"), dst); err != nil {
		t.Fatal(err)
	}
	pfd := []unix.PollFd{{Fd: int32(s.WaitFD()), Events: unix.POLLIN}}
	if k, err := unix.Poll(pfd, 5000); err != nil || k != 1 || pfd[0].Revents&unix.POLLIN == 0 {
		t.Fatalf("poll on WaitFD after a datagram: n=%d revents=%#x err=%v", k, pfd[0].Revents, err)
	}
	if !s.Arm() {
		t.Fatal("Arm reports an empty RX ring after poll said readable")
	}
	for i := 1; i < n; i++ {
		if _, err := c.WriteToUDP([]byte(fmt.Sprintf("rx %d", i)), dst); err != nil {
			t.Fatal(err)
		}
	}

	got := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	var rxBytes uint64
	for len(got) < n && time.Now().Before(deadline) {
		k := s.Transmit(64, func(f []byte, _ vnet.Offload) {
			p, ok := udpPayload(f, dport)
			if !ok {
				return // ARP, IPv6 neighbour discovery...
			}
			if !bytes.Equal(f[0:6], v.hostMAC) || !bytes.Equal(f[6:12], v.peerMAC) ||
				!bytes.Equal(f[26:30], peerIP) || !bytes.Equal(f[30:34], hostIP) {
				t.Errorf("frame %x: wrong addresses", f)
			}
			want := udpFrame(v.hostMAC, v.peerMAC, peerIP, hostIP, 40000, dport, p)
			// Compare all but the IP id and flags (DF), the IP checksum
			// and the UDP checksum the kernel filled in.
			for _, r := range [][2]int{{0, 18}, {22, 24}, {26, 40}, {42, len(want)}} {
				if len(f) != len(want) || !bytes.Equal(f[r[0]:r[1]], want[r[0]:r[1]]) {
					t.Errorf("frame bytes %d..%d:\n got %x\nwant %x", r[0], r[1], f, want)
					break
				}
			}
			got[string(p)] = true
			rxBytes += uint64(len(f))
		})
		if k == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	for i := range n {
		if p := fmt.Sprintf("rx %d", i); !got[p] {
			t.Fatalf("datagram %q never came out of Transmit (%d of %d did)", p, len(got), n)
		}
	}
	after := s.Stats()
	if d := after.RxPackets - before.RxPackets; d < n {
		t.Errorf("rx_packets grew by %d, want at least %d", d, n)
	}
	if d := after.RxBytes - before.RxBytes; d < rxBytes {
		t.Errorf("rx_bytes grew by %d, want at least %d", d, rxBytes)
	}
}

// testTX delivers hand-built UDP frames to the namespace's address and
// checks a socket there receives every one, from hostIP, intact. Batches
// are larger than the kernel's per-sendto budget in copy mode (32), so
// Flush has to keep kicking.
func testTX(t *testing.T, v *vethNS, s *Socket) {
	const batches, batch, dport, sport = 10, 100, 9998, 7777
	c := v.listenUDP(t, &net.UDPAddr{IP: peerIP, Port: dport})
	before := s.Stats()

	var mu sync.Mutex
	got := map[string]bool{}
	bad := make(chan string, 1)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return // closed by the test's cleanup
			}
			if !from.IP.Equal(hostIP) || from.Port != sport {
				select {
				case bad <- fmt.Sprintf("datagram from %v", from):
				default:
				}
			}
			mu.Lock()
			got[string(buf[:n])] = true
			mu.Unlock()
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }

	for b := range batches {
		for i := range batch {
			p := fmt.Appendf(nil, "tx %d/%d %s", b, i, strings.Repeat("x", i))
			if !s.Deliver(udpFrame(v.peerMAC, v.hostMAC, hostIP, peerIP, sport, dport, p)) {
				t.Fatalf("Deliver refused frame %d/%d: %+v", b, i, s.Stats())
			}
		}
		s.Flush()
		// Let the receiver keep up, so its socket buffer never overflows.
		for deadline := time.Now().Add(5 * time.Second); count() < (b+1)*batch && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
			s.Flush()
		}
		if n := count(); n < (b+1)*batch {
			t.Fatalf("after batch %d the namespace received %d datagrams, want %d; stats %+v", b, n, (b+1)*batch, s.Stats())
		}
	}
	select {
	case m := <-bad:
		t.Fatal(m)
	default:
	}
	for b := range batches {
		for i := range batch {
			if p := fmt.Sprintf("tx %d/%d %s", b, i, strings.Repeat("x", i)); !got[p] {
				t.Fatalf("datagram %q missing or corrupted", p)
			}
		}
	}
	// Every send frame comes back through the completion ring.
	for deadline := time.Now().Add(5 * time.Second); len(s.txFree) < int(s.nTx) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		s.Flush()
	}
	after := s.Stats()
	if d := after.TxPackets - before.TxPackets; d != batches*batch {
		t.Errorf("tx_packets grew by %d, want %d", d, batches*batch)
	}
	if d := after.TxCompleted - before.TxCompleted; d != batches*batch || len(s.txFree) != int(s.nTx) {
		t.Errorf("tx_completed grew by %d, want %d; %d of %d send frames free", d, batches*batch, len(s.txFree), s.nTx)
	}
	if after.TxKicks == before.TxKicks {
		t.Error("no sendto kicks counted")
	}
}

// TestVethSmallUMEM runs out of send frames and checks Deliver refuses,
// counts the drop and recovers after a Flush.
func TestVethSmallUMEM(t *testing.T) {
	requireAFXDP(t)
	v := newVethNS(t)
	s := openOn(t, v, Options{NumFrames: 64})
	c := v.listenUDP(t, &net.UDPAddr{IP: peerIP, Port: 9997})
	frame := func(i int) []byte {
		return udpFrame(v.peerMAC, v.hostMAC, hostIP, peerIP, 7777, 9997, fmt.Appendf(nil, "small %d", i))
	}
	for i := range 32 {
		if !s.Deliver(frame(i)) {
			t.Fatalf("Deliver %d of 32 refused", i)
		}
	}
	if s.Deliver(frame(32)) {
		t.Fatal("Deliver accepted a 33rd frame with 32 send frames")
	}
	if s.Deliver(make([]byte, 2049)) {
		t.Fatal("Deliver accepted a frame larger than a UMEM frame")
	}
	s.Flush()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	for i := range 32 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if want := fmt.Sprintf("small %d", i); string(buf[:n]) != want {
			t.Fatalf("datagram %d: %q, want %q", i, buf[:n], want)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); len(s.txFree) < 32 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		s.Flush()
	}
	if !s.Deliver(frame(33)) {
		t.Fatal("Deliver refused after the completions came back")
	}
	st := s.Stats()
	if st.TxDropNoFrame != 1 || st.TxDropTooBig != 1 {
		t.Fatalf("drops: no frame %d (want 1), too big %d (want 1)", st.TxDropNoFrame, st.TxDropTooBig)
	}
}

// TestVethCloseLeaksNothing checks that Close returns every fd and
// mapping Open took and detaches the program.
func TestVethCloseLeaksNothing(t *testing.T) {
	requireAFXDP(t)
	v := newVethNS(t)
	// A first Open/Close warms up anything cilium/ebpf caches for the
	// process's life (feature probes).
	s, err := Open(v.host, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	fds, maps := countFDs(t), countMappings(t)
	for _, opts := range []Options{{}, {ZeroCopy: true}} {
		s, err := Open(v.host, opts)
		if err != nil {
			t.Fatalf("Open(%+v): %v", opts, err)
		}
		if n := countFDs(t); n <= fds {
			t.Fatalf("Open took no fd (%d before, %d after)?", fds, n)
		}
		if !strings.Contains(ip(t, "link", "show", "dev", v.host), "prog/xdp") {
			t.Fatalf("no XDP program on %s after Open", v.host)
		}
		if n := countMappings(t); n < maps+4 {
			t.Fatalf("%d AF_XDP ring mappings while open, %d before: the count sees no rings", n, maps)
		}
		umem := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&s.umem[0])))
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if n := countFDs(t); n != fds {
			t.Errorf("%d fds open after Open+Close, %d before", n, fds)
		}
		if n := countMappings(t); n != maps {
			t.Errorf("%d AF_XDP mappings after Open+Close, %d before", n, maps)
		}
		if b, _ := os.ReadFile("/proc/self/maps"); bytes.Contains(b, []byte("\n"+umem)) {
			t.Errorf("UMEM at %s still mapped after Close", umem)
		}
		if out := ip(t, "link", "show", "dev", v.host); strings.Contains(out, "prog/xdp") {
			t.Errorf("XDP program still attached after Close:\n%s", out)
		}
	}
	// A failed Open leaks nothing either.
	if _, err := Open(v.host, Options{FrameSize: 1000}); err == nil {
		t.Fatal("Open accepted a frame size of 1000")
	}
	if _, err := Open("cxnosuchif0", Options{}); err == nil {
		t.Fatal("Open accepted a missing interface")
	}
	if n := countFDs(t); n != fds {
		t.Errorf("%d fds open after failed Opens, %d before", n, fds)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// countMappings counts the process's mappings of AF_XDP sockets (the
// rings show up as mappings of a socket).
func countMappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "socket:[") + strings.Count(string(b), "XDP")
}
