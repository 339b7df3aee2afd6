// Package serial emulates a 16550A UART, enough for Linux's 8250 driver to
// use it as a console: transmit, receive with a FIFO, the interrupt enable,
// identification, line control/status and modem registers.
package serial

import (
	"io"
	"sync"
)

// Register offsets from the base port.
const (
	regData    = 0 // RBR (read) / THR (write); DLL when DLAB
	regIER     = 1 // DLM when DLAB
	regIIR     = 2 // IIR (read) / FCR (write)
	regLCR     = 3
	regMCR     = 4
	regLSR     = 5
	regMSR     = 6
	regScratch = 7

	// PortCount is how many I/O ports the UART decodes.
	PortCount = 8
	// COM1 is the standard first serial port base and its ISA IRQ.
	COM1Port = 0x3f8
	COM1IRQ  = 4
)

const (
	ierRDA  = 1 << 0 // received data available
	ierTHRE = 1 << 1 // transmitter holding register empty

	iirNone = 0x01
	iirTHRE = 0x02
	iirRDA  = 0x04
	iirFIFO = 0xc0

	lcrDLAB = 1 << 7

	mcrLoop = 1 << 4
	mcrOut2 = 1 << 3

	lsrDR   = 1 << 0
	lsrTHRE = 1 << 5
	lsrTEMT = 1 << 6

	msrCTS = 1 << 4
	msrDSR = 1 << 5
	msrDCD = 1 << 7

	rxFIFOCap = 4096
)

// UART is one 16550A. Its methods are safe for concurrent use.
type UART struct {
	mu  sync.Mutex
	out io.Writer
	// irq sets the level of the UART's interrupt line.
	irq func(level bool)

	ier, lcr, mcr, scratch byte
	dll, dlm               byte
	fcr                    byte
	rx                     []byte
	// threPending is set when THR became empty and the guest has not yet
	// read IIR since (the THRE interrupt is edge-like in a 16550).
	threPending bool
	level       bool
	// Written counts bytes the guest transmitted.
	written uint64
}

// New returns a UART that writes transmitted bytes to out and drives its
// interrupt line through irq.
func New(out io.Writer, irq func(level bool)) *UART {
	return &UART{out: out, irq: irq, dll: 12}
}

// Written returns how many bytes the guest has transmitted.
func (u *UART) Written() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.written
}

// Read handles a guest read of the register at offset (0–7).
func (u *UART) Read(offset uint16) byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	var v byte
	switch offset {
	case regData:
		if u.lcr&lcrDLAB != 0 {
			v = u.dll
			break
		}
		if len(u.rx) > 0 {
			v = u.rx[0]
			u.rx = u.rx[1:]
		}
	case regIER:
		if u.lcr&lcrDLAB != 0 {
			v = u.dlm
		} else {
			v = u.ier
		}
	case regIIR:
		v = u.iir() | iirFIFO
		if v&0x0f == iirTHRE {
			u.threPending = false
		}
	case regLCR:
		v = u.lcr
	case regMCR:
		v = u.mcr
	case regLSR:
		v = lsrTHRE | lsrTEMT
		if len(u.rx) > 0 {
			v |= lsrDR
		}
	case regMSR:
		if u.mcr&mcrLoop != 0 {
			// Loopback: outputs come back as inputs.
			v = (u.mcr & 0x0f) << 4
		} else {
			v = msrCTS | msrDSR | msrDCD
		}
	case regScratch:
		v = u.scratch
	}
	u.update()
	return v
}

// Write handles a guest write of v to the register at offset (0–7).
func (u *UART) Write(offset uint16, v byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch offset {
	case regData:
		if u.lcr&lcrDLAB != 0 {
			u.dll = v
			break
		}
		if u.mcr&mcrLoop != 0 {
			u.pushRx(v)
		} else {
			u.out.Write([]byte{v})
			u.written++
		}
		u.threPending = true
	case regIER:
		if u.lcr&lcrDLAB != 0 {
			u.dlm = v
			break
		}
		// Enabling THRE while the holding register is empty raises it at
		// once, as on real hardware; Linux's 8250 driver relies on it.
		if v&ierTHRE != 0 && u.ier&ierTHRE == 0 {
			u.threPending = true
		}
		u.ier = v & 0x0f
	case regIIR:
		u.fcr = v
		if v&0x02 != 0 {
			u.rx = u.rx[:0]
		}
	case regLCR:
		u.lcr = v
	case regMCR:
		u.mcr = v & 0x1f
	case regScratch:
		u.scratch = v
	}
	u.update()
}

// Input queues bytes the guest will receive (from the host terminal).
// Bytes beyond the FIFO's capacity are dropped, as a real UART overruns.
func (u *UART) Input(p []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, b := range p {
		u.pushRx(b)
	}
	u.update()
}

func (u *UART) pushRx(b byte) {
	if len(u.rx) < rxFIFOCap {
		u.rx = append(u.rx, b)
	}
}

// iir returns the highest-priority pending interrupt identification.
func (u *UART) iir() byte {
	switch {
	case u.ier&ierRDA != 0 && len(u.rx) > 0:
		return iirRDA
	case u.ier&ierTHRE != 0 && u.threPending:
		return iirTHRE
	}
	return iirNone
}

// update drives the interrupt line from the pending state. Called with mu
// held.
func (u *UART) update() {
	level := u.iir() != iirNone
	if level != u.level {
		u.level = level
		if u.irq != nil {
			u.irq(level)
		}
	}
}
