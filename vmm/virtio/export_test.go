package virtio

// ReadStatusForTest reads device_status as the driver does.
func (p *PCI) ReadStatusForTest() uint8 {
	b := []byte{0}
	p.BARRead(0, commonOffset+ccStatus, b)
	return b[0]
}
