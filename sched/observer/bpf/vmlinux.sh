#!/bin/sh
# Writes bpf/vmlinux.h (the kernel's types, for CO-RE) from this host's BTF.
# Needs Debian's bpftool. The generated objects are committed; this only
# runs under 'go generate' / 'make generate'.
set -e
out="$(dirname "$0")/vmlinux.h"
[ -s "$out" ] && exit 0
command -v bpftool >/dev/null || { echo "bpftool not found: apt-get install bpftool clang llvm libbpf-dev" >&2; exit 1; }
bpftool btf dump file /sys/kernel/btf/vmlinux format c > "$out.tmp"
mv "$out.tmp" "$out"
