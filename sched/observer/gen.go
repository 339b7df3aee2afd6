package observer

// The BPF programs are compiled by bpf2go into observer_bpfel.o (embedded)
// and observer_bpfel.go (the map and record types); both are committed, so
// building colibri needs no C toolchain. After changing bpf/observer.bpf.c,
// regenerate them as root on a Debian host (12 or later) with
//
//	apt-get install clang llvm libbpf-dev bpftool
//	go generate ./sched/observer/    # or: make generate
//
// bpf/vmlinux.sh first writes bpf/vmlinux.h (not committed) from the
// running kernel's BTF; the programs read kernel structures only through
// CO-RE (BPF_CORE_READ), so the object built on one kernel loads on others
// (Debian's 6.1 and 6.12, and the 6.18 the project's machines run) as long
// as the fields it names exist there. clang 14 (Debian 12) targets BPF
// v1, which has no fetch-and-add returning a value: keep
// __sync_fetch_and_add's result unused. Commit the regenerated files with
// the source change.
//
//go:generate sh bpf/vmlinux.sh
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type slot_state -type hist observer bpf/observer.bpf.c -- -I./bpf
