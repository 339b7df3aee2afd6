//go:build linux && amd64

package main

import (
	"fmt"
	"sort"
	"strings"
)

// kindStats counts one attack kind's runs and outcomes.
type kindStats struct {
	// n counts runs; broke those after which the device said
	// DEVICE_NEEDS_RESET; miss those whose outcome broke colibri's rules
	// (a malformed ring accepted, an illegal write taking effect, a
	// device not working after a reset, a buffer overrun); inconclusive
	// those that could not be judged (a receive attack no frame reached).
	n, broke, miss, inconclusive int
}

// devStats counts what was done to one device, for comparison with the
// VMM's counters.
type devStats struct {
	attacks int
	// needsReset counts the times the attacker saw DEVICE_NEEDS_RESET.
	needsReset int
	// expRefused counts the common-configuration writes the transport
	// must refuse (each is one refused_writes in colibri's counters).
	expRefused int
	// expErrors counts requests the device must fail or refuse without
	// breaking the ring: virtio-blk's bad requests, virtio-net's
	// malformed transmit chains and bad control commands.
	expErrors int
	// validOK of validN plain requests worked (before and after attacks).
	validOK, validN int
	// spoofed counts frames sent with another source MAC.
	spoofed int
	// rxUnanswered counts valid receive checks no frame reached in time.
	rxUnanswered int
}

func (s *devStats) String() string {
	return fmt.Sprintf("attacks:%d,needs_reset:%d,refused:%d,errors:%d,valid:%d/%d,spoofed:%d,rx_unanswered:%d",
		s.attacks, s.needsReset, s.expRefused, s.expErrors, s.validOK, s.validN, s.spoofed, s.rxUnanswered)
}

// formatKinds lists the kinds as name:n:broke:miss:inconclusive, sorted.
func formatKinds(kinds map[string]*kindStats) string {
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, k := range names {
		s := kinds[k]
		parts = append(parts, fmt.Sprintf("%s:%d:%d:%d:%d", k, s.n, s.broke, s.miss, s.inconclusive))
	}
	return strings.Join(parts, ",")
}
