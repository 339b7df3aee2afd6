//go:build linux && amd64

package main

import "time"

// attack is one kind of attack; on names the device kinds it applies
// to ("" for all).
type attack struct {
	name string
	on   string
	run  func(a *attacker, d *vdev, kind string)
}

func (t attack) applies(d *vdev) bool { return t.on == "" || t.on == d.kind }

// catalogue lists every attack kind: on the transport's state machine
// and registers, on the rings (malformed chains on each device's queues),
// and on each device's requests.
func catalogue() []attack {
	list := []attack{
		{"valid", "", func(a *attacker, d *vdev, k string) { a.recheck(k, d) }},
		{"status-order", "", (*attacker).statusOrder},
		{"queue-size", "", (*attacker).queueSize},
		{"queue-late", "", (*attacker).queueLate},
		{"queue-select-oob", "", (*attacker).queueSelectOOB},
		{"readonly-regs", "", (*attacker).readonlyRegs},
		{"vectors-oob", "", (*attacker).vectorsOOB},
		{"bar-junk", "", (*attacker).barJunk},
		{"cfg-junk", "", (*attacker).cfgJunk},
		{"msix-anywhere", "", (*attacker).msixAnywhere},
		{"bar-move", "", (*attacker).barMove},
		{"kick-storm", "", (*attacker).kickStorm},
		{"reset-race", "", (*attacker).resetRace},
		{"churn", "", (*attacker).churn},
		{"rings-outside", "", (*attacker).ringsOutside},
		{"rings-misaligned", "", (*attacker).ringsMisaligned},
		{"rings-overlap", "", (*attacker).ringsOverlap},
		{"used-readonly", "", (*attacker).usedReadonly},
		{"used-vga", "rng", (*attacker).usedVGA},
		{"used-vga", "blk", (*attacker).usedVGA},
		{"net-no-pair", "net", (*attacker).netNoPair},
		{"tx-malformed", "net", (*attacker).txMalformed},
		{"tx-spoof", "net", (*attacker).txSpoof},
		{"ctrl-bad", "net", (*attacker).ctrlBad},
		{"rx-readonly", "net", (*attacker).rxReadonly},
		{"blk-bad", "blk", (*attacker).blkBad},
		{"tx-toctou", "net", (*attacker).txToctou},
	}
	for _, ra := range ringAttacks {
		ra := ra
		list = append(list, attack{"ring-" + ra.name, "", func(a *attacker, d *vdev, k string) {
			q := 0
			if d.kind == "net" {
				q = 1 // the transmit queue
			}
			a.runRing(k, d, q, ra)
		}})
		list = append(list, attack{"rx-" + ra.name, "net", func(a *attacker, d *vdev, k string) { a.runRing(k, d, 0, ra) }})
		list = append(list, attack{"ctrl-" + ra.name, "net", func(a *attacker, d *vdev, k string) {
			if d.nq > 2 {
				a.runRing(k, d, 2, ra)
			}
		}})
	}
	return list
}

// runRing activates d, makes a malformed chain available on queue q and
// expects DEVICE_NEEDS_RESET. A receive queue is only read when a frame
// arrives: ARP requests to the peer bring its replies.
func (a *attacker) runRing(kind string, d *vdev, q int, ra ringAttack) {
	if _, ok := a.upValid(d); !ok {
		return
	}
	rx := d.kind == "net" && q == 0
	if !rx && a.rnd.IntN(3) == 0 {
		a.valid(kind, d) // a good request before the bad one
	}
	r := d.rings[q]
	ra.build(a, d, r, r.data[len(r.data)-1])
	d.kick(q)
	if rx {
		for i := 0; i < 3 && !d.needsReset(); i++ {
			a.sendARP(d, d.mac)
			time.Sleep(20 * time.Millisecond)
		}
	}
	a.expectBreak(kind, d, rx)
}

// program resets d and programs l's features, vectors and queues
// without setting DRIVER_OK; it reports whether FEATURES_OK stuck.
func (a *attacker) program(d *vdev, l layout) bool {
	if !d.reset() {
		d.dead = true
		return false
	}
	if !d.negotiate(l.feat) {
		return false
	}
	if l.vector != nil {
		d.setCC(ccConfigMSIX, 2, uint64(l.vector(-1)))
	}
	for q := 0; q < d.nq; q++ {
		r := d.rings[q]
		if l.size[q] == 0 {
			continue
		}
		r.clear(l.size[q])
		r.eventIdx = l.feat&featEventIdx != 0
		desc, avail, used := r.desc.pa, r.avail.pa, r.used.pa
		if l.addr != nil {
			desc, avail, used = l.addr(q, r)
		}
		if l.vector != nil {
			d.setCC(ccQueueSel, 2, uint64(q))
			d.setCC(ccQueueMSIX, 2, uint64(l.vector(q)))
		}
		d.setQueue(q, l.size[q], desc, avail, used, true)
	}
	return true
}

// recheck activates d afresh and runs a valid request: after an attack,
// a reset must make the device work again.
func (a *attacker) recheck(kind string, d *vdev) {
	if _, ok := a.upValid(d); ok {
		a.valid(kind, d)
	}
}
