# Sourced by guestimages/build.sh and scripts/kvm-sandbox: fetch and unpack
# Debian packages (the stock kernel, busybox) into a cache, without
# installing them on the host.

# depmod, modinfo and modprobe live in /usr/sbin, which users' PATHs may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac
colibri_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# colibri_cache_dir prints (and creates) the download cache shared by
# guestimages/build.sh and scripts/kvm-sandbox: guestimages/cache in the
# repository unless $COLIBRI_CACHE says otherwise.
colibri_cache_dir() {
	local d=${COLIBRI_CACHE:-$colibri_lib_dir/../guestimages/cache}
	mkdir -p "$d/debs" "$d/unpacked" "$d/resolved"
	(cd "$d" && pwd)
}

# colibri_apt_stamp prints a string that changes whenever the apt package
# lists do, so package resolutions can be cached (apt-cache takes ~0.5 s).
colibri_apt_stamp() {
	stat -c '%Y' /var/lib/apt/lists /var/cache/apt/pkgcache.bin 2>/dev/null | tr '\n' .
}

# colibri_cached KEY CMD... prints CMD's output, cached under KEY until the
# apt lists change.
colibri_cached() {
	local key=$1 f out
	shift
	f=$(colibri_cache_dir)/resolved/$(printf '%s|%s' "$key" "$(colibri_apt_stamp)" | sha256sum | cut -c1-16)
	if [ -s "$f" ]; then
		cat "$f"
		return
	fi
	out=$("$@") || return 1
	[ -n "$out" ] || return 1
	printf '%s\n' "$out" >"$f.tmp" && mv "$f.tmp" "$f"
	printf '%s\n' "$out"
}

# colibri_kernel_pkg prints the versioned kernel package behind
# $KERNEL_PKG (default linux-image-amd64), e.g. linux-image-6.1.0-56-amd64.
# Metapackages (linux-image-amd64, linux-image-cloud-amd64, ...) are
# resolved through apt-cache depends; a versioned name is taken as is.
colibri_kernel_pkg() {
	local meta=${KERNEL_PKG:-linux-image-amd64} dep
	case "$meta" in
	linux-image-[0-9]*) echo "$meta"; return ;;
	esac
	dep=$(colibri_cached "depends $meta" _colibri_resolve_meta "$meta" || true)
	if [ -z "$dep" ]; then
		echo "images: cannot resolve $meta to a versioned kernel package (is it a Debian kernel metapackage? run 'apt-get update' first)" >&2
		return 1
	fi
	echo "$dep"
}

_colibri_resolve_meta() {
	apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

_colibri_candidate() {
	apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" {print $2}'
}

# colibri_fetch PKG prints the directory where PKG's .deb is unpacked,
# downloading it with apt-get download on first use.
colibri_fetch() {
	local pkg=$1 cache ver deb dir
	cache=$(colibri_cache_dir)
	ver=$(colibri_pkg_version "$pkg" || true)
	if [ -z "$ver" ]; then
		echo "images: Debian package $pkg not found (run 'apt-get update' first)" >&2
		return 1
	fi
	dir=$cache/unpacked/${pkg}_${ver//:/%}
	if [ ! -f "$dir/.done" ]; then
		deb=$(ls "$cache/debs/${pkg}_"*.deb 2>/dev/null | grep -F "${ver#*:}_" | head -n1 || true)
		if [ -z "$deb" ]; then
			echo "images: fetching $pkg $ver ..." >&2
			local log
			if ! log=$(cd "$cache/debs" && apt-get download -q "$pkg=$ver" 2>&1); then
				echo "images: apt-get download $pkg=$ver failed (run 'apt-get update' first, and check the network):" >&2
				printf '%s\n' "$log" | tail -n 3 | sed 's/^/  /' >&2
				return 1
			fi
			deb=$(ls "$cache/debs/${pkg}_"*.deb | grep -F "${ver#*:}_" | head -n1)
		fi
		rm -rf "$dir"
		mkdir -p "$dir"
		echo "images: unpacking $(basename "$deb")" >&2
		dpkg-deb -x "$deb" "$dir" || { echo "images: unpacking $deb failed" >&2; rm -rf "$dir"; return 1; }
		touch "$dir/.done"
	fi
	echo "$dir"
}

# colibri_pkg_version PKG prints the candidate version of PKG.
colibri_pkg_version() {
	colibri_cached "candidate $1" _colibri_candidate "$1"
}

# colibri_copy_modules KROOT KVER DEST MOD... copies the named modules and
# everything they depend on (by modinfo) from KROOT/lib/modules/KVER into
# DEST/lib/modules/KVER, decompressing .ko.xz/.ko.zst, and runs depmod.
colibri_copy_modules() {
	local kroot=$1 kver=$2 dest=$3
	shift 3
	local src=$kroot/lib/modules/$kver
	# The package ships no modules.dep/alias (its postinst runs depmod):
	# index the unpacked tree once, so softdeps name aliases can be resolved.
	if [ ! -f "$src/modules.alias" ]; then
		depmod -b "$kroot" "$kver" 2>/dev/null || true
	fi
	local -A seen=()
	local queue=("$@") m f deps
	mkdir -p "$dest/lib/modules/$kver/kernel"
	while [ ${#queue[@]} -gt 0 ]; do
		m=${queue[0]}
		queue=("${queue[@]:1}")
		m=${m//-/_}
		[ -n "${seen[$m]:-}" ] && continue
		seen[$m]=1
		f=$(find "$src/kernel" \( -name "$m.ko*" -o -name "${m//_/-}.ko*" \) -print -quit)
		if [ -z "$f" ]; then
			# Built in, or absent from this kernel: nothing to copy.
			continue
		fi
		local rel=${f#$src/}
		mkdir -p "$dest/lib/modules/$kver/$(dirname "$rel")"
		case "$f" in
		*.ko.xz) xz -dc "$f" >"$dest/lib/modules/$kver/${rel%.xz}" ;;
		*.ko.zst) zstd -qdc "$f" >"$dest/lib/modules/$kver/${rel%.zst}" ;;
		*.ko.gz) gzip -dc "$f" >"$dest/lib/modules/$kver/${rel%.gz}" ;;
		*) cp "$f" "$dest/lib/modules/$kver/$rel" ;;
		esac
		deps=$(modinfo -F depends "$f" 2>/dev/null | tr ',' ' ')
		for d in $deps; do queue+=("$d"); done
		# softdeps ("pre: crypto-crc32c") name aliases: resolve them by
		# the tree's modules.alias (kmod's modprobe -R).
		for d in $(modinfo -F softdep "$f" 2>/dev/null | tr ' ' '\n' | grep -v -E '^(pre|post):$' || true); do
			for r in $(modprobe -d "$kroot" -S "$kver" -R "$d" 2>/dev/null || true); do queue+=("$r"); done
		done
	done
	cp "$src/modules.builtin" "$src/modules.order" "$dest/lib/modules/$kver/" 2>/dev/null || true
	[ -f "$src/modules.builtin.modinfo" ] && cp "$src/modules.builtin.modinfo" "$dest/lib/modules/$kver/"
	depmod -b "$dest" "$kver"
}

# colibri_cpio DIR OUT packs DIR reproducibly as a gzip'd newc cpio.
colibri_cpio() {
	local dir=$1 out=$2
	find "$dir" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
	(cd "$dir" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -1 >"$out.tmp.$$"
	mv "$out.tmp.$$" "$out"
}

# colibri_vmlinux KROOT KVER prints the path of the uncompressed ELF vmlinux
# inside bzImage KROOT/boot/vmlinuz-KVER, extracting it (once) into the
# unpacked package. QEMU boots such an ELF through its PVH entry point
# (Debian builds CONFIG_PVH=y), which skips the in-guest decompression
# (~3 s under TCG). Prints nothing if the payload's compression is unknown.
colibri_vmlinux() {
	local kroot=$1 kver=$2 bz out off magic dec
	bz=$kroot/boot/vmlinuz-$kver
	out=$kroot/boot/vmlinux-$kver
	if [ ! -s "$out" ]; then
		for magic in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
			dec=${magic%%:*}
			command -v "$dec" >/dev/null || continue
			off=$(LC_ALL=C grep -obUaP "${magic#*:}" "$bz" 2>/dev/null | head -n1 | cut -d: -f1)
			[ -n "$off" ] || continue
			case $dec in
			xz) tail -c +$((off + 1)) "$bz" | xz -dcq --single-stream >"$out.tmp" 2>/dev/null || true ;;
			zstd) tail -c +$((off + 1)) "$bz" | zstd -dcq >"$out.tmp" 2>/dev/null || true ;;
			gzip) tail -c +$((off + 1)) "$bz" | gzip -dcq >"$out.tmp" 2>/dev/null || true ;;
			esac
			if [ "$(head -c 4 "$out.tmp" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; then
				mv "$out.tmp" "$out"
				break
			fi
			rm -f "$out.tmp"
		done
	fi
	[ -s "$out" ] && echo "$out"
	return 0
}
