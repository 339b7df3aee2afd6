package afxdp

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// xdpPass is the XDP_PASS action: bpf_redirect_map's default when the
// queue has no socket in the map.
const xdpPass = 2

// offRxQueueIndex is the offset of rx_queue_index in struct xdp_md
// (data, data_end, data_meta, ingress_ifindex, rx_queue_index: five u32s).
const offRxQueueIndex = 16

// newXSKMap creates the XSKMAP the program redirects through, one slot per
// queue up to entries.
func newXSKMap(entries uint32) (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "colibri_xsks",
		Type:       ebpf.XSKMap,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: entries,
	})
	if err != nil {
		return nil, fmt.Errorf("create XSKMAP: %w", err)
	}
	return m, nil
}

// redirectInstructions is the XDP program, equivalent to
//
//	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
//
// Frames on a queue with no socket in the map go to the kernel's stack.
func redirectInstructions(xsks *ebpf.Map) (asm.Instructions, error) {
	loadMap := asm.LoadMapPtr(asm.R1, 0)
	if err := loadMap.AssociateMap(xsks); err != nil {
		return nil, fmt.Errorf("reference XSKMAP from the XDP program: %w", err)
	}
	return asm.Instructions{
		// r2 = ctx->rx_queue_index (r1 is the context on entry)
		asm.LoadMem(asm.R2, asm.R1, offRxQueueIndex, asm.Word),
		// r1 = &xsks
		loadMap,
		// r3 = XDP_PASS: the action when the lookup misses
		asm.Mov.Imm(asm.R3, xdpPass),
		asm.FnRedirectMap.Call(),
		asm.Return(),
	}, nil
}

// newRedirectProgram loads the XDP program that redirects every frame to
// the socket in xsks for its receive queue.
func newRedirectProgram(xsks *ebpf.Map) (*ebpf.Program, error) {
	insns, err := redirectInstructions(xsks)
	if err != nil {
		return nil, err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "colibri_xsk",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: insns,
	})
	if err != nil {
		return nil, fmt.Errorf("load XDP redirect program: %w", err)
	}
	return prog, nil
}
