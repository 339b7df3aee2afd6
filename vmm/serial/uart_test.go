package serial

import (
	"bytes"
	"testing"
)

type line struct{ levels []bool }

func (l *line) set(v bool) { l.levels = append(l.levels, v) }
func (l *line) high() bool { return len(l.levels) > 0 && l.levels[len(l.levels)-1] }

func TestTransmit(t *testing.T) {
	var out bytes.Buffer
	u := New(&out, nil)
	for _, b := range []byte("hi\r\n") {
		if u.Read(regLSR)&lsrTHRE == 0 {
			t.Fatal("THR not empty")
		}
		u.Write(regData, b)
	}
	if out.String() != "hi\r\n" || u.Written() != 4 {
		t.Errorf("out %q written %d", out.String(), u.Written())
	}
}

func TestDivisorLatch(t *testing.T) {
	var out bytes.Buffer
	u := New(&out, nil)
	u.Write(regLCR, lcrDLAB|3)
	u.Write(regData, 0x01)
	u.Write(regIER, 0x00)
	if u.Read(regData) != 1 || u.Read(regIER) != 0 {
		t.Error("divisor latch not readable")
	}
	u.Write(regLCR, 3)
	if out.Len() != 0 {
		t.Error("divisor write went to the console")
	}
	if u.Read(regLCR) != 3 {
		t.Error("LCR not kept")
	}
}

func TestInterrupts(t *testing.T) {
	var l line
	u := New(&bytes.Buffer{}, l.set)
	// Enabling THRE interrupts with an empty THR raises the line.
	u.Write(regIER, ierTHRE)
	if !l.high() {
		t.Fatal("THRE interrupt not raised on enable")
	}
	if id := u.Read(regIIR) & 0x0f; id != iirTHRE {
		t.Fatalf("IIR %#x, want THRE", id)
	}
	if l.high() {
		t.Fatal("reading IIR did not clear THRE")
	}
	u.Write(regData, 'a')
	if !l.high() {
		t.Fatal("THRE not raised after a transmit")
	}
	u.Write(regIER, 0)
	if l.high() {
		t.Fatal("line high with interrupts disabled")
	}
	// Received data: RDA has priority and stays until the FIFO drains.
	u.Write(regIER, ierRDA)
	u.Input([]byte("xy"))
	if !l.high() || u.Read(regIIR)&0x0f != iirRDA || u.Read(regLSR)&lsrDR == 0 {
		t.Fatal("RDA not signalled")
	}
	if u.Read(regData) != 'x' || !l.high() {
		t.Fatal("first byte wrong or line dropped early")
	}
	if u.Read(regData) != 'y' || l.high() {
		t.Fatal("line not dropped once the FIFO drained")
	}
	if u.Read(regLSR)&lsrDR != 0 {
		t.Fatal("DR set with an empty FIFO")
	}
}

func TestLoopbackAndOverrun(t *testing.T) {
	var out bytes.Buffer
	u := New(&out, nil)
	u.Write(regMCR, mcrLoop|mcrOut2)
	u.Write(regData, 0x5a)
	if out.Len() != 0 || u.Read(regData) != 0x5a {
		t.Error("loopback byte not received")
	}
	u.Write(regMCR, 0)
	u.Input(make([]byte, rxFIFOCap+100))
	if len(u.rx) != rxFIFOCap {
		t.Errorf("FIFO holds %d, cap %d", len(u.rx), rxFIFOCap)
	}
}
