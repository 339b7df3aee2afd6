#!/usr/bin/env bash
# build.sh [--out DIR] [--pkgs "PKG..."]: builds colibri's default guest
# images from Debian packages only, reproducibly and cached:
#   vmlinuz      the stock Debian kernel ($KERNEL_PKG, default linux-image-amd64)
#   vmlinux      the same kernel, uncompressed (ELF): boots without the
#                guest decompressing it
#   initrd.img   busybox-static + that kernel's virtio/ext4/input modules + guestimages/init
#   disk.ext4    a 64 MiB ext4 image holding hello.txt
#   manifest.txt package versions and sha256 of each output
# With --pkgs, also (the default images stay as they are):
#   initrd-pkgs.img       initrd.img followed by a second cpio archive with
#                         the Debian packages PKG... and the shared libraries
#                         their programs need (guestimages/pkgs.sh), so they
#                         run under the same init (PATH has /usr/bin)
#   manifest-pkgs.txt     the packages in it, their versions, its sha256
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/out
pkgs=
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out=$2; shift 2 ;;
	--pkgs) pkgs=$2; shift 2 ;;
	-h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
case "$pkgs" in *[!a-z0-9.+\ -]*) echo "build.sh: --pkgs \"$pkgs\": want Debian package names separated by spaces" >&2; exit 2 ;; esac
missing=
tools="apt-get apt-cache dpkg-deb depmod modinfo cpio gzip mkfs.ext4 debugfs sha256sum"
[ -z "$pkgs" ] || tools="$tools readelf tar"
for tool in $tools; do
	command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
	echo "images: missing tools:$missing (run 'make deps': Debian packages apt, dpkg, kmod, cpio, e2fsprogs, binutils)" >&2
	exit 1
fi
export PATH=$PATH:/usr/sbin:/sbin
# shellcheck source=../scripts/lib-debian-kernel.sh
. "$here/../scripts/lib-debian-kernel.sh"
# shellcheck source=pkgs.sh
. "$here/pkgs.sh"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

kpkg=$(colibri_kernel_pkg)
kver_deb=$(colibri_pkg_version "$kpkg")
bbver=$(colibri_pkg_version busybox-static)
key=$(printf '%s\n' "$kpkg=$kver_deb" "busybox-static=$bbver" "$(sha256sum "$0" "$here/init" "$here/../scripts/lib-debian-kernel.sh")" | sha256sum | cut -c1-16)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

build_default() {
	mkdir -p "$out"
	# initrd-pkgs.img holds a copy of initrd.img: it is stale from here on.
	rm -f "$out/initrd-pkgs.img" "$out/manifest-pkgs.txt" "$out/.key-pkgs"
	kroot=$(colibri_fetch "$kpkg")
	bbroot=$(colibri_fetch busybox-static)
	kver=$(ls "$kroot/lib/modules" | head -n1)
	echo "images: kernel $kpkg $kver_deb ($kver)"
	cp "$kroot/boot/vmlinuz-$kver" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
	vmlinux=$(colibri_vmlinux "$kroot" "$kver")
	if [ -n "$vmlinux" ]; then
		cp "$vmlinux" "$out/vmlinux.tmp" && mv "$out/vmlinux.tmp" "$out/vmlinux"
	else
		echo "images: could not extract vmlinux from the bzImage (unknown compression): booting the bzImage only" >&2
		rm -f "$out/vmlinux"
	fi

	root=$stage/initrd
	mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,mnt,etc,root}
	cp "$bbroot/bin/busybox" "$root/bin/busybox"
	cp "$here/init" "$root/init"
	chmod 0755 "$root/init" "$root/bin/busybox"
	echo "images: initrd: busybox $bbver, modules for $kver"
	colibri_copy_modules "$kroot" "$kver" "$root" virtio_pci virtio_blk virtio_net virtio_rng virtio_console ext4 af_packet crc32c_generic crc32c_intel evdev button
	colibri_cpio "$root" "$out/initrd.img"

	echo "images: disk.ext4 (64 MiB)"
	mkdir -p "$stage/disk"
	printf 'hello from the colibri disk image\n' >"$stage/disk/hello.txt"
	find "$stage/disk" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	rm -f "$out/disk.ext4.tmp"
	E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -T default -L colibri -U 6b8b4567-327b-23c6-643c-986966334873 \
		-E root_owner=0:0,hash_seed=0b2d3c4e-5f60-4172-8394-a5b6c7d8e9f0,lazy_itable_init=0 \
		-d "$stage/disk" "$out/disk.ext4.tmp" 64M >/dev/null
	# mkfs.ext4 1.47.0 copies each file's ctime, which touch cannot set: pin it.
	(cd "$stage/disk" && find . -mindepth 1 | LC_ALL=C sort | sed "s|^\.\(.*\)|sif \"\1\" ctime @$SOURCE_DATE_EPOCH|") >"$stage/ctime.cmds"
	E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f "$stage/ctime.cmds" "$out/disk.ext4.tmp" >/dev/null 2>&1 ||
		{ echo "images: debugfs could not pin ctimes in disk.ext4" >&2; exit 1; }
	mv "$out/disk.ext4.tmp" "$out/disk.ext4"

	{
		echo "kernel $kpkg $kver_deb ($kver)"
		echo "busybox-static $bbver"
		echo "build-key $key (packages + build.sh, init, lib-debian-kernel.sh)"
		(cd "$out" && sha256sum vmlinuz initrd.img disk.ext4 && { [ ! -f vmlinux ] || sha256sum vmlinux; })
	} >"$out/manifest.txt"
	echo "$key" >"$out/.key"
	echo "images: done in $out"
}

# build_pkgs: initrd-pkgs.img, keyed by the default images' key, the
# packages asked for and the versions of every package they may pull in.
build_pkgs() {
	local want closure pkey p staged
	want=$(printf '%s\n' $pkgs | LC_ALL=C sort -u | tr '\n' ' ')
	want=${want% }
	closure=$(colibri_pkg_closure $want) || exit 1
	pkey=$( {
		echo "$key" "$want"
		for p in $closure; do echo "$p=$(colibri_pkg_version "$p")"; done
		sha256sum "$here/pkgs.sh"
	} | sha256sum | cut -c1-16)
	if [ -f "$out/.key-pkgs" ] && [ "$(cat "$out/.key-pkgs")" = "$pkey" ] && [ -f "$out/initrd-pkgs.img" ]; then
		echo "images: initrd-pkgs.img up to date in $out ($want)"
		return
	fi
	echo "images: initrd-pkgs.img: $want and their libraries"
	staged=$(colibri_stage_pkgs "$stage/pkgs" $want) || exit 1
	colibri_cpio "$stage/pkgs" "$stage/pkgs.cpio.gz"
	# The kernel unpacks concatenated compressed cpio archives in order.
	cat "$out/initrd.img" "$stage/pkgs.cpio.gz" >"$out/initrd-pkgs.img.tmp"
	mv "$out/initrd-pkgs.img.tmp" "$out/initrd-pkgs.img"
	{
		echo "initrd-pkgs.img = initrd.img + these packages (asked for: $want)"
		printf '%s\n' "$staged" | sed 's/^/  /'
		echo "build-key $pkey"
		(cd "$out" && sha256sum initrd-pkgs.img)
	} >"$out/manifest-pkgs.txt"
	echo "$pkey" >"$out/.key-pkgs"
	echo "images: initrd-pkgs.img: $(printf '%s\n' "$staged" | wc -l) packages, $(du -m "$stage/pkgs.cpio.gz" | cut -f1) MiB compressed, $(du -sm "$stage/pkgs" | cut -f1) MiB unpacked"
}

if [ -f "$out/.key" ] && [ "$(cat "$out/.key")" = "$key" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] && [ -f "$out/disk.ext4" ]; then
	echo "images: up to date in $out ($kpkg $kver_deb)"
else
	build_default
fi
[ -z "$pkgs" ] || build_pkgs
