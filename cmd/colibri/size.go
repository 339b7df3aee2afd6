package main

import (
	"fmt"
	"strconv"
	"strings"
)

// parseSize parses a memory size: a number of bytes with an optional K, M, G
// or T suffix (powers of 1024, optionally followed by "i" and/or "B"). A bare
// number means MiB, as in QEMU.
func parseSize(s string) (uint64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(t, "B")
	t = strings.TrimSuffix(t, "I")
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	shift := 20
	switch t[len(t)-1] {
	case 'K':
		shift = 10
	case 'M':
		shift = 20
	case 'G':
		shift = 30
	case 'T':
		shift = 40
	default:
		if t[len(t)-1] < '0' || t[len(t)-1] > '9' {
			return 0, fmt.Errorf("%q: unknown unit (use K, M, G or T)", s)
		}
		t += "M"
	}
	n, err := strconv.ParseUint(t[:len(t)-1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("%q: size must be positive", s)
	}
	if n > (1<<63)>>shift {
		return 0, fmt.Errorf("%q is absurdly large", s)
	}
	return n << shift, nil
}
