package vmm

import (
	"sort"
	"sync/atomic"
)

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
	// perPort counts accesses by port, for --stats (only the pages of
	// ports in use become resident).
	perPort *[1 << 16]atomic.Uint32
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

func (b *pioBus) count(port uint16) {
	if b.perPort == nil {
		return
	}
	b.perPort[port].Add(1)
}

// top returns the n most accessed ports with their counts.
func (b *pioBus) top(n int) []portCount {
	if b.perPort == nil {
		return nil
	}
	var out []portCount
	for p := range b.perPort {
		if c := b.perPort[p].Load(); c > 0 {
			out = append(out, portCount{uint16(p), c})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].count > out[j].count })
	if len(out) > n {
		out = out[:n]
	}
	return out
}

type portCount struct {
	port  uint16
	count uint32
}

func (b *pioBus) read(port uint16, data []byte) {
	b.count(port)
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
	b.count(port)
	if d := b.find(port); d != nil {
		d.PIOWrite(port, data)
		return
	}
	b.unhandled.Add(1)
}
