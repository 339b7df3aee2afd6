#!/usr/bin/env bash
# selftest.sh [--out DIR] [--all]: the integration test of the guest images.
# Boots out/vmlinuz + out/initrd.img under QEMU TCG (no KVM needed) with a
# virtio-blk disk (out/disk.ext4, snapshot) and a virtio-rng, and checks:
#   1. colibri.run="mount /dev/vda /mnt && cat /mnt/hello.txt": the banner,
#      hello.txt's line and "colibri-guest: exit status 0";
#   2. colibri.run=false (an unquoted word): "colibri-guest: exit status 1",
#      booting out/vmlinux (the uncompressed ELF, PVH entry) if it exists;
#   3. colibri.run="sleep 600", then QEMU's system_powerdown (its ACPI
#      power button) after the banner: the guest prints its power-button
#      line and powers off, without "exit status";
#   4. if out/initrd-pkgs.img exists (build.sh --pkgs), it boots and the
#      programs of the packages named in out/manifest-pkgs.txt that are
#      memcached, sockperf, cyclictest or stress-ng print their versions;
#   5. with --all, the default demo (no colibri.run): banner and hello.txt.
# Prints the time from QEMU start to the banner; exits 1 if a check failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/out all=0
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out=$2; shift 2 ;;
	--all) all=1; shift ;;
	-h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "selftest: unknown argument $1" >&2; exit 2 ;;
	esac
done
for f in vmlinuz initrd.img disk.ext4; do
	[ -f "$out/$f" ] || { echo "selftest: $out/$f missing: run guestimages/build.sh first" >&2; exit 2; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "selftest: qemu-system-x86_64 missing (Debian package qemu-system-x86)" >&2; exit 2; }
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
hello=$(printf 'hello from the colibri disk image')
failed=0

# boot NAME APPEND [KERNEL [INITRD]]: boots the images once, logging the
# console to $log/NAME with the milliseconds since QEMU started prefixed to
# each line. $monitor, if set, is a path: QEMU's monitor then reads
# commands from the FIFO $monitor.in (and writes to $monitor.out).
monitor=
boot() {
	local name=$1 append=$2 kernel=${3:-$out/vmlinuz} initrd=${4:-$out/initrd.img} start mon=(-monitor none)
	[ -z "$monitor" ] || mon=(-chardev "pipe,id=mon,path=$monitor" -mon chardev=mon,mode=readline)
	start=$(date +%s%N)
	timeout 180 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -M pc -smp 2 -m 512M \
		-nodefaults -no-user-config -display none "${mon[@]}" -no-reboot -serial stdio \
		-kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 quiet panic=-1 $append" \
		-device virtio-rng-pci -drive "file=$out/disk.ext4,if=virtio,format=raw,snapshot=on" \
		</dev/null 2>&1 | while IFS= read -r line; do
		# Stamped as each line arrives (a tr in the pipe would buffer them
		# all until QEMU exits).
		printf '%s %s\n' "$((($(date +%s%N) - start) / 1000000))" "${line%$'\r'}"
	done >"$log/$name" || true
}

# expect NAME TEXT: the log of NAME has a line containing TEXT.
expect() {
	if grep -qF -- "$2" "$log/$1"; then
		echo "selftest: $1: ok: $2"
	else
		echo "selftest: $1: FAILED: no line with: $2"
		failed=1
	fi
}

show_on_failure() {
	[ $failed = 0 ] && return
	echo "selftest: console of $1:"
	sed 's/^[0-9]* /  | /' "$log/$1" | tail -n 30
}

banner_time() {
	awk '/colibri-guest: up:/ {printf "%.2f s", $1 / 1000; exit}' "$log/$1"
}

echo "selftest: boot 1: colibri.run with a quoted command ..."
boot run 'colibri.run="mount /dev/vda /mnt && cat /mnt/hello.txt"'
expect run "colibri-guest: up: cpus=2 mem="
expect run "$hello"
expect run "colibri-guest: exit status 0"
expect run "colibri-guest: powering off"
echo "selftest: boot 1: banner after $(banner_time run) ($(grep -o 'kernel=[^ ]*' "$log/run" | head -n1))"
show_on_failure run

# Boot 2 uses the uncompressed vmlinux (PVH entry under QEMU) when built.
k2=$out/vmlinuz
[ -f "$out/vmlinux" ] && k2=$out/vmlinux
echo "selftest: boot 2: colibri.run with one unquoted word ($(basename "$k2")) ..."
boot false 'colibri.run=false' "$k2"
expect false "colibri-guest: up: cpus=2"
expect false "colibri-guest: exit status 1"
echo "selftest: boot 2: banner after $(banner_time false)"
show_on_failure false

echo "selftest: boot 3: the power button (QEMU system_powerdown after the banner) ..."
monitor=$log/mon
mkfifo "$monitor.in" "$monitor.out"
(
	for _ in $(seq 1800); do
		grep -q "colibri-guest: up:" "$log/button" 2>/dev/null && break
		sleep 0.1
	done
	# QEMU holds the FIFO open; if it has already exited, do not block.
	timeout 10 sh -c 'echo system_powerdown >"$1"' _ "$monitor.in"
) &
boot button 'colibri.run="sleep 600"'
wait
monitor=
expect button "colibri-guest: up: cpus=2"
expect button "colibri-guest: power button: shutting down"
if grep -qF "colibri-guest: exit status" "$log/button"; then
	echo "selftest: button: FAILED: the command ended, not the power button"
	failed=1
fi
echo "selftest: boot 3: power-button line $(awk '/colibri-guest: up:/ {u = $1} /power button: shutting down/ {printf "%.2f s", ($1 - u) / 1000}' "$log/button") after the banner"
show_on_failure button

if [ -f "$out/initrd-pkgs.img" ]; then
	echo "selftest: boot 4: initrd-pkgs.img ..."
	cmd= want=()
	for p in memcached:"memcached -h | head -n 1":"memcached 1." \
		sockperf:"sockperf -v | grep version":"version 3." \
		rt-tests:"cyclictest --help | head -n 1":"cyclictest V" \
		stress-ng:"stress-ng --version":"stress-ng, version"; do
		grep -q "^  ${p%%:*} " "$out/manifest-pkgs.txt" 2>/dev/null || continue
		rest=${p#*:}
		cmd="$cmd${rest%%:*}; "
		want+=("${rest#*:}")
	done
	boot pkgs "colibri.run=\"${cmd}true\"" "$out/vmlinuz" "$out/initrd-pkgs.img"
	expect pkgs "colibri-guest: up: cpus=2"
	for w in "${want[@]}"; do expect pkgs "$w"; done
	expect pkgs "colibri-guest: exit status 0"
	show_on_failure pkgs
fi

if [ $all = 1 ]; then
	echo "selftest: boot 5: the default demo ..."
	boot demo ''
	expect demo "colibri-guest: up: cpus=2"
	expect demo "hello.txt says: $hello"
	expect demo "/dev/hwrng"
	show_on_failure demo
fi

if [ $failed = 0 ]; then
	echo "selftest: all checks passed"
else
	echo "selftest: some checks FAILED"
	exit 1
fi
