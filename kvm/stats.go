package kvm

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Stats reads KVM's binary statistics (KVM_GET_STATS_FD) of a VM or vCPU:
// counters the kernel keeps, including exits handled without userspace.
type Stats struct {
	fd    int
	descs []statDesc
	data  int64
}

type statDesc struct {
	name   string
	offset uint32
	size   uint16
}

// OpenStats parses the stats descriptor table of fd (from VM.StatsFD or
// VCPU.StatsFD) and takes ownership of fd.
func OpenStats(fd int) (*Stats, error) {
	hdr := make([]byte, 24)
	if _, err := unix.Pread(fd, hdr, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("reading KVM stats header: %w", err)
	}
	le := binary.LittleEndian
	nameSize := le.Uint32(hdr[4:])
	num := le.Uint32(hdr[8:])
	descOff := le.Uint32(hdr[16:])
	dataOff := le.Uint32(hdr[20:])
	if num > 4096 || nameSize > 1024 {
		unix.Close(fd)
		return nil, fmt.Errorf("KVM stats header: implausible %d descriptors of name size %d", num, nameSize)
	}
	descSize := 16 + int(nameSize)
	buf := make([]byte, int(num)*descSize)
	if _, err := unix.Pread(fd, buf, int64(descOff)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("reading KVM stats descriptors: %w", err)
	}
	s := &Stats{fd: fd, data: int64(dataOff)}
	for i := 0; i < int(num); i++ {
		d := buf[i*descSize : (i+1)*descSize]
		name := d[16:]
		for j, b := range name {
			if b == 0 {
				name = name[:j]
				break
			}
		}
		s.descs = append(s.descs, statDesc{name: string(name), size: le.Uint16(d[6:]), offset: le.Uint32(d[8:])})
	}
	return s, nil
}

// Read returns every scalar counter by name (histograms are summed).
func (s *Stats) Read() (map[string]uint64, error) {
	var end uint32
	for _, d := range s.descs {
		if e := d.offset + 8*uint32(d.size); e > end {
			end = e
		}
	}
	buf := make([]byte, end)
	if _, err := unix.Pread(s.fd, buf, s.data); err != nil {
		return nil, fmt.Errorf("reading KVM stats: %w", err)
	}
	out := make(map[string]uint64, len(s.descs))
	for _, d := range s.descs {
		var v uint64
		for i := uint32(0); i < uint32(d.size); i++ {
			v += binary.LittleEndian.Uint64(buf[d.offset+8*i:])
		}
		out[d.name] = v
	}
	return out, nil
}

// Close closes the stats fd.
func (s *Stats) Close() error { return unix.Close(s.fd) }

// ReadStats returns the vCPU's KVM binary statistics by name.
func (c *VCPU) ReadStats() (map[string]uint64, error) {
	fd, err := c.StatsFD()
	if err != nil {
		return nil, err
	}
	st, err := OpenStats(fd)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return st.Read()
}
