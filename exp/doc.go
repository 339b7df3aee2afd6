// Package exp runs scheduling experiments on a colibri host: real
// programs in stock-kernel guests, a latency-critical (LC) server driven
// by an open-loop client and batch work that reports what it got done,
// under each scheduling policy to compare, with the policy switched live
// between phases (or a fresh boot per policy), repeated, and written out
// as results.json, a Markdown report and SVG plots.
//
// An experiment file is an up file (host/spec: pollers, sched, switches,
// vms) with one more top-level key, experiment:
//
//	pollers: {cores: [0]}
//	sched: {cores: [1], cpu: 0, mode: sleep, period: 1ms}
//	switches: [{name: sw0, uplinks: [{tap: colexp0}]}]
//	vms:
//	  - {name: server, class: lc, nics: [{switch: sw0}]}
//	  - {name: batch, class: batch}
//	experiment:
//	  boot: once              # once (policies switched live) | per-policy
//	  repeats: 3              # at least 1; 3 or more for medians and spreads
//	  warmup: 2s              # per phase, not measured
//	  duration: 5s            # per phase, measured
//	  isolated: pinned        # policy of the isolated run (batch VMs paused); none: no isolated run
//	  policies:               # the phases, in order; a list value is a sweep
//	    - linux
//	    - pinned
//	    - {policy: central, threshold: [500us, 1ms]}
//	  lc:                     # sockperf server in a guest, sockperf under-load client
//	    - {server: server, client: host, mps: 2000, msg_size: 64}
//	  batch:                  # stress-ng in a guest: bogo ops/s is its throughput
//	    - {vm: batch, args: "--cpu 1"}
//	  timeline: {rate: 1000, seconds: 2}   # per-core timeline samples per second, and for how long
//
// Guests run colibri's init (guestimages/init) with the Debian programs of
// initrd-pkgs.img (guestimages/build.sh --pkgs "sockperf stress-ng"): the
// runner writes each guest's colibri.run="..." itself (network setup, then
// a small command loop reading the serial console), so a VM of an
// experiment file names no colibri.run of its own. Guest output is
// untrusted input: every line the runner reads is bounded and parsed
// strictly, and a guest that says nothing useful fails its measurement,
// not the runner.
//
// NICs get addresses 10.77.S.N/24: S is the switch's index in the file, N
// is 1 for the host end of the switch's first TAP uplink and 10 + the VM's
// index for a VM. A client "host" runs sockperf on this host through that
// TAP uplink, pinned to the CPUs of Options.ClientCPUs; a client naming a
// VM runs it there.
package exp
