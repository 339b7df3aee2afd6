package netstack_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/colibrivm/colibri/netstack"
	"golang.org/x/sys/unix"

	"github.com/colibrivm/colibri/internal/vnet"
)

// testEtherType is IEEE 802 local experimental ethertype 1: nothing else
// on a fresh tap sends it.
const testEtherType = 0x88B5

// needTAP fails the test unless it can create tap devices.
func needTAP(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("TAP tests create tap devices and must run as root ('make test' runs them as root)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Fatalf("TAP tests need /dev/net/tun: %v", err)
	}
}

func tapName(t testing.TB, tag string) string {
	return fmt.Sprintf("cbt%s%d", tag, os.Getpid()%100000)
}

func openTAP(t testing.TB, name string) *netstack.TAP {
	t.Helper()
	tap, err := netstack.OpenTAP(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tap.Close() })
	return tap
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket is an AF_PACKET socket bound to one interface: the host's
// side of a tap.
type packetSocket struct {
	fd      int
	ifindex int
}

func openPacketSocket(t testing.TB, ifname string) *packetSocket {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatalf("AF_PACKET socket: %v", err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		t.Fatalf("bind AF_PACKET to %s: %v", ifname, err)
	}
	tv := unix.Timeval{Usec: 100000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return &packetSocket{fd: fd, ifindex: ifi.Index}
}

func (s *packetSocket) send(t testing.TB, frame []byte) {
	t.Helper()
	if _, err := unix.Write(s.fd, frame); err != nil {
		t.Fatalf("send on AF_PACKET: %v", err)
	}
}

// recv waits up to 3 s for a frame with the test ethertype.
func (s *packetSocket) recv(t testing.TB) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			continue
		}
		if n >= 14 && binary.BigEndian.Uint16(buf[12:14]) == testEtherType {
			return append([]byte(nil), buf[:n]...)
		}
	}
	t.Fatal("no test frame on the host side of the tap")
	return nil
}

func testFrame(dst, src [6]byte, size int, tag string) []byte {
	f := make([]byte, size)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], testEtherType)
	copy(f[14:], tag)
	return f
}

// tapRecv waits for a frame with the test ethertype on the tap's
// transmit side.
func tapRecv(t *testing.T, tap *netstack.TAP) []byte {
	t.Helper()
	var got []byte
	deadline := time.Now().Add(3 * time.Second)
	for got == nil && time.Now().Before(deadline) {
		tap.Transmit(8, func(f []byte, _ vnet.Offload) {
			if len(f) >= 14 && binary.BigEndian.Uint16(f[12:14]) == testEtherType {
				got = append([]byte(nil), f...)
			}
		})
		time.Sleep(time.Millisecond)
	}
	if got == nil {
		t.Fatal("no test frame on the tap's Transmit side")
	}
	return got
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func TestTAPBothWays(t *testing.T) {
	needTAP(t)
	checkNoLeaks(t)
	name := tapName(t, "a")
	tap := openTAP(t, name)
	if !tap.Created() {
		t.Fatalf("%s existed before the test", name)
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil || ifi.Flags&net.FlagUp == 0 {
		t.Fatalf("%s not up: %v %v", name, ifi, err)
	}
	ps := openPacketSocket(t, name)

	// Host -> tap: what the host sends is the tap's Transmit side.
	out := testFrame(macA, macX, 200, "host to tap")
	ps.send(t, out)
	if got := tapRecv(t, tap); !bytes.Equal(got, out) {
		t.Fatalf("Transmit got % x, want % x", got[:32], out[:32])
	}

	// Tap -> host: Deliver writes to the host.
	in := testFrame(macX, macA, 1500, "tap to host")
	if !tap.Deliver(in) {
		t.Fatalf("Deliver failed: %+v", tap.Stats())
	}
	tap.Flush()
	if got := ps.recv(t); !bytes.Equal(got, in) {
		t.Fatalf("host got % x, want % x", got[:32], in[:32])
	}
	if s := tap.Stats(); s != (netstack.TAPStats{}) {
		t.Errorf("errors: %+v", s)
	}
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	if linkExists(name) {
		t.Errorf("%s still exists after Close of the tap that created it", name)
	}
}

func TestTAPExistingDeviceKept(t *testing.T) {
	needTAP(t)
	name := tapName(t, "p")
	if out, err := exec.Command("ip", "tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr").CombinedOutput(); err != nil {
		t.Skipf("ip tuntap add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", name).Run() })
	tap := openTAP(t, name)
	if tap.Created() {
		t.Fatal("Created() true for a device that existed")
	}
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	if !linkExists(name) {
		t.Fatal("Close removed a tap it did not create")
	}
}

func TestTAPErrors(t *testing.T) {
	needTAP(t)
	if _, err := netstack.OpenTAP("lo"); err == nil || !strings.Contains(err.Error(), "TUNSETIFF") {
		t.Errorf("OpenTAP(lo): %v, want a TUNSETIFF error", err)
	}
	if _, err := netstack.OpenTAP("a-name-far-too-long-for-linux"); err == nil {
		t.Error("too long a name accepted")
	}
}

// TestTAPUplink runs a tap as a switch port next to an in-memory guest:
// frames the host sends reach the guest, and the guest's reach the host,
// through the pollers (which sleep on the tap fd in between).
func TestTAPUplink(t *testing.T) {
	needTAP(t)
	checkNoLeaks(t)
	name := tapName(t, "u")
	tap := openTAP(t, name)
	ps := openPacketSocket(t, name)
	sw := netstack.NewSwitch("sw0")
	up, _ := sw.AddPort("uplink")
	guest, _ := sw.AddPort("guest")
	q := newQueue(t, 0)
	if err := up.SetEndpoints([]netstack.Endpoint{tap}); err != nil {
		t.Fatal(err)
	}
	if err := guest.SetEndpoints([]netstack.Endpoint{q}); err != nil {
		t.Fatal(err)
	}
	st, err := netstack.New(netstack.Config{Pollers: 1, IdleAfter: 100 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.AddSwitch(sw); err != nil {
		t.Fatal(err)
	}
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the poller to sleep", func() bool { return st.Stats().Pollers[0].Sleeps > 0 })
	time.Sleep(5 * time.Millisecond)

	out := testFrame(bcast, macX, 100, "host broadcast")
	ps.send(t, out)
	var got [][]byte
	waitFor(t, "the host's frame at the guest", func() bool {
		for _, f := range q.Take() {
			if binary.BigEndian.Uint16(f[12:14]) == testEtherType {
				got = append(got, f)
			}
		}
		return len(got) > 0
	})
	if !bytes.Equal(got[0], out) {
		t.Fatalf("guest got % x", got[0][:32])
	}
	if st.Stats().Pollers[0].Wakeups == 0 {
		t.Error("the poller did not count waking on the tap fd")
	}
	in := testFrame(macX, macA, 300, "guest to host")
	q.Inject(in)
	if got := ps.recv(t); !bytes.Equal(got, in) {
		t.Fatalf("host got % x", got[:32])
	}
	if p := sw.Lookup(macX[:]); p != up {
		t.Errorf("host MAC learned on %v, want the uplink", p)
	}
	if err := up.SetEndpoints(nil); err != nil {
		t.Fatal(err)
	}
}
