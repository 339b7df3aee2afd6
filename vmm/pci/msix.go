package pci

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
)

const (
	capMSIX          = 0x11
	msixEnable       = 1 << 15
	msixFunctionMask = 1 << 14
	msixEntrySize    = 16
	entryMasked      = 1
	// NoVector is the "no MSI-X vector" value virtio and PCI use.
	NoVector = 0xffff
)

// MSIX is a function's MSI-X capability and table. Each vector is an
// InterruptRoute from the Platform, programmed when the guest unmasks it.
type MSIX struct {
	mu      sync.Mutex
	cfg     *ConfigSpace
	capOff  uint32
	table   []byte
	pending []bool
	routes  []InterruptRoute
	// live[v] is true while vector v is deliverable: MSI-X enabled, the
	// function and the vector unmasked. Fire reads it without the lock.
	live []atomic.Bool
}

// NewMSIX adds an MSI-X capability with vectors entries to cfg, its table at
// tableOff and its pending-bit array at pbaOff inside BAR bar, and allocates
// one route per vector from plat.
func NewMSIX(cfg *ConfigSpace, plat Platform, vectors, bar int, tableOff, pbaOff uint32) (*MSIX, error) {
	if vectors < 1 || vectors > 2048 {
		return nil, fmt.Errorf("MSI-X: %d vectors, want 1 to 2048", vectors)
	}
	m := &MSIX{cfg: cfg, table: make([]byte, vectors*msixEntrySize), pending: make([]bool, vectors), live: make([]atomic.Bool, vectors)}
	for v := 0; v < vectors; v++ {
		binary.LittleEndian.PutUint32(m.table[v*msixEntrySize+12:], entryMasked)
		r, err := plat.AllocateMSI()
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("MSI-X vector %d: %w", v, err)
		}
		m.routes = append(m.routes, r)
	}
	body := make([]byte, 10)
	binary.LittleEndian.PutUint16(body[0:], uint16(vectors-1))
	binary.LittleEndian.PutUint32(body[2:], tableOff|uint32(bar))
	binary.LittleEndian.PutUint32(body[6:], pbaOff|uint32(bar))
	writable := []byte{0, msixEnable>>8 | msixFunctionMask>>8}
	m.capOff = uint32(cfg.AddCapability(capMSIX, body, writable))
	cfg.OnWrite = func(offset uint32, length int) {
		if offset < m.capOff+4 && offset+uint32(length) > m.capOff+2 {
			m.mu.Lock()
			m.updateLocked()
			m.mu.Unlock()
		}
	}
	return m, nil
}

// Vectors returns the table size.
func (m *MSIX) Vectors() int { return len(m.routes) }

// TableSize and PBASize are the byte sizes of the two regions.
func (m *MSIX) TableSize() int { return len(m.table) }

// PBASize is the size of the pending-bit array in bytes.
func (m *MSIX) PBASize() int { return (len(m.routes) + 63) / 64 * 8 }

func (m *MSIX) control() uint16 {
	return binary.LittleEndian.Uint16(m.cfg.Bytes(m.capOff+2, 2))
}

// Enabled reports whether the guest turned MSI-X on.
func (m *MSIX) Enabled() bool { return m.control()&msixEnable != 0 }

// updateLocked reprograms routes and delivers pending vectors after any
// change of the control word or the table.
func (m *MSIX) updateLocked() {
	ctl := m.control()
	on := ctl&msixEnable != 0 && ctl&msixFunctionMask == 0
	for v := range m.routes {
		e := m.table[v*msixEntrySize:]
		live := on && binary.LittleEndian.Uint32(e[12:])&entryMasked == 0
		if live {
			msg := MSIMessage{Address: binary.LittleEndian.Uint64(e[0:]), Data: binary.LittleEndian.Uint32(e[8:])}
			if err := m.routes[v].Program(msg); err != nil {
				live = false
			}
		}
		m.live[v].Store(live)
		if live && m.pending[v] {
			m.pending[v] = false
			m.routes[v].Fire()
		}
	}
}

// ReadTable handles a guest read inside the table.
func (m *MSIX) ReadTable(offset uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	readBytes(m.table, offset, data)
}

// WriteTable handles a guest write inside the table.
func (m *MSIX) WriteTable(offset uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if offset >= uint64(len(m.table)) || uint64(len(data)) > uint64(len(m.table))-offset {
		return
	}
	copy(m.table[offset:], data)
	m.updateLocked()
}

// ReadPBA handles a guest read of the pending-bit array.
func (m *MSIX) ReadPBA(offset uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pba := make([]byte, m.PBASize())
	for v, p := range m.pending {
		if p {
			pba[v/8] |= 1 << (v % 8)
		}
	}
	readBytes(pba, offset, data)
}

// Fire raises vector v, or marks it pending while it is masked. The
// deliverable path takes no lock.
func (m *MSIX) Fire(v int) error {
	if v < 0 || v >= len(m.routes) {
		return nil // NoVector or out of range: nothing to raise
	}
	if m.live[v].Load() {
		return m.routes[v].Fire()
	}
	m.mu.Lock()
	if m.live[v].Load() {
		m.mu.Unlock()
		return m.routes[v].Fire()
	}
	m.pending[v] = true
	m.mu.Unlock()
	return nil
}

// Route returns vector v's route (for pollers that write its eventfd).
func (m *MSIX) Route(v int) InterruptRoute { return m.routes[v] }

// Close releases the routes.
func (m *MSIX) Close() error {
	for _, r := range m.routes {
		r.Close()
	}
	m.routes = nil
	return nil
}

func readBytes(src []byte, offset uint64, data []byte) {
	for i := range data {
		if o := offset + uint64(i); o < uint64(len(src)) {
			data[i] = src[o]
		} else {
			data[i] = 0
		}
	}
}
