package vmm

import "sync/atomic"

// pioDevice handles guest port I/O for a range of ports.
type pioDevice interface {
	PIORead(port uint16, data []byte)
	PIOWrite(port uint16, data []byte)
}

type pioRange struct {
	base, count uint16
	dev         pioDevice
}

// pioBus dispatches port I/O exits. It is built before the vCPUs start and
// never changes after, so lookups take no lock.
type pioBus struct {
	ranges    []pioRange
	unhandled atomic.Uint64
}

func (b *pioBus) add(base, count uint16, dev pioDevice) {
	b.ranges = append(b.ranges, pioRange{base, count, dev})
}

func (b *pioBus) find(port uint16) pioDevice {
	for _, r := range b.ranges {
		if port >= r.base && port-r.base < r.count {
			return r.dev
		}
	}
	return nil
}

func (b *pioBus) read(port uint16, data []byte) {
	if d := b.find(port); d != nil {
		d.PIORead(port, data)
		return
	}
	b.unhandled.Add(1)
	for i := range data {
		data[i] = 0xff
	}
}

func (b *pioBus) write(port uint16, data []byte) {
	if d := b.find(port); d != nil {
		d.PIOWrite(port, data)
		return
	}
	b.unhandled.Add(1)
}
