package observer

// Regenerating needs Debian's clang, llvm, libbpf-dev and bpftool; the
// generated observer_bpfel.{go,o} are committed so builds need none.
//go:generate sh bpf/vmlinux.sh
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type slot_state -type hist observer bpf/observer.bpf.c -- -I./bpf
