package pci

// ECAMSize is the size of the enhanced configuration access window for bus
// 0: 32 devices × 8 functions × 4 KiB.
const ECAMSize = 32 * 8 * 4096

// ECAMRead handles a guest read at offset inside the bus's ECAM (MMCONFIG)
// window: offset = device<<15 | function<<12 | register.
func (b *Bus) ECAMRead(offset uint64, data []byte) {
	dev, reg, ok := b.ecamTarget(offset, len(data))
	if !ok {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	dev.Config().Read(reg, data)
}

// ECAMWrite handles a guest write inside the ECAM window.
func (b *Bus) ECAMWrite(offset uint64, data []byte) {
	if dev, reg, ok := b.ecamTarget(offset, len(data)); ok {
		dev.Config().Write(reg, data)
	}
}

func (b *Bus) ecamTarget(offset uint64, n int) (Device, uint32, bool) {
	if offset >= ECAMSize {
		return nil, 0, false
	}
	slot := int(offset >> 15)
	fn := (offset >> 12) & 7
	reg := uint32(offset & 0xfff)
	if fn != 0 || int(reg)+n > 4096 {
		return nil, 0, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if slot >= len(b.slots) {
		return nil, 0, false
	}
	return b.slots[slot], reg, true
}
