//go:build linux && amd64

package main

// Implemented in mmio_amd64.s: one access of exactly that width, never
// merged, split or elided by the compiler.
func mmioRead8(addr uintptr) uint8
func mmioRead16(addr uintptr) uint16
func mmioRead32(addr uintptr) uint32
func mmioRead64(addr uintptr) uint64
func mmioWrite8(addr uintptr, v uint8)
func mmioWrite16(addr uintptr, v uint16)
func mmioWrite32(addr uintptr, v uint32)
func mmioWrite64(addr uintptr, v uint64)

// mmioWrite stores the low width bytes of v at addr in one access.
func mmioWrite(addr uintptr, width int, v uint64) {
	switch width {
	case 1:
		mmioWrite8(addr, uint8(v))
	case 2:
		mmioWrite16(addr, uint16(v))
	case 4:
		mmioWrite32(addr, uint32(v))
	default:
		mmioWrite64(addr, v)
	}
}

// mmioRead loads width bytes at addr in one access.
func mmioRead(addr uintptr, width int) uint64 {
	switch width {
	case 1:
		return uint64(mmioRead8(addr))
	case 2:
		return uint64(mmioRead16(addr))
	case 4:
		return uint64(mmioRead32(addr))
	default:
		return mmioRead64(addr)
	}
}
