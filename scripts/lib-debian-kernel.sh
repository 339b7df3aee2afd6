# Sourced by guestimages/build.sh and scripts/kvm-sandbox: fetch and unpack
# Debian packages (the stock kernel, busybox) into a cache, without
# installing them on the host.

# colibri_cache_dir prints (and creates) the download cache.
colibri_cache_dir() {
	local d=${COLIBRI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/colibri}
	mkdir -p "$d/debs" "$d/unpacked"
	echo "$d"
}

# colibri_kernel_pkg prints the versioned kernel package behind
# $KERNEL_PKG (default linux-image-amd64), e.g. linux-image-6.1.0-56-amd64.
colibri_kernel_pkg() {
	local meta=${KERNEL_PKG:-linux-image-amd64} dep
	case "$meta" in
	linux-image-[0-9]*) echo "$meta"; return ;;
	esac
	dep=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	if [ -z "$dep" ]; then
		echo "images: cannot resolve $meta to a kernel package (run 'apt-get update' first)" >&2
		return 1
	fi
	echo "$dep"
}

# colibri_fetch PKG prints the directory where PKG's .deb is unpacked,
# downloading it with apt-get download on first use.
colibri_fetch() {
	local pkg=$1 cache ver deb dir
	cache=$(colibri_cache_dir)
	ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
	if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
		echo "images: Debian package $pkg not found (run 'apt-get update' first)" >&2
		return 1
	fi
	dir=$cache/unpacked/${pkg}_${ver//:/%}
	if [ ! -f "$dir/.done" ]; then
		deb=$(ls "$cache/debs/${pkg}_"*.deb 2>/dev/null | grep -F "${ver#*:}_" | head -n1 || true)
		if [ -z "$deb" ]; then
			echo "images: fetching $pkg $ver" >&2
			(cd "$cache/debs" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1) || {
				echo "images: apt-get download $pkg=$ver failed (run 'apt-get update' first?)" >&2
				return 1
			}
			deb=$(ls "$cache/debs/${pkg}_"*.deb | grep -F "${ver#*:}_" | head -n1)
		fi
		rm -rf "$dir"
		mkdir -p "$dir"
		dpkg-deb -x "$deb" "$dir" || { echo "images: unpacking $deb failed" >&2; rm -rf "$dir"; return 1; }
		touch "$dir/.done"
	fi
	echo "$dir"
}

# colibri_pkg_version PKG prints the candidate version of PKG.
colibri_pkg_version() {
	apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'
}

# colibri_copy_modules KROOT KVER DEST MOD... copies the named modules and
# everything they depend on (by modinfo) from KROOT/lib/modules/KVER into
# DEST/lib/modules/KVER, decompressing .ko.xz/.ko.zst, and runs depmod.
colibri_copy_modules() {
	local kroot=$1 kver=$2 dest=$3
	shift 3
	local src=$kroot/lib/modules/$kver
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
	done
	cp "$src/modules.builtin" "$src/modules.order" "$dest/lib/modules/$kver/" 2>/dev/null || true
	[ -f "$src/modules.builtin.modinfo" ] && cp "$src/modules.builtin.modinfo" "$dest/lib/modules/$kver/"
	depmod -b "$dest" "$kver"
}

# colibri_cpio DIR OUT packs DIR reproducibly as a gzip'd newc cpio.
colibri_cpio() {
	local dir=$1 out=$2
	find "$dir" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
	(cd "$dir" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --reproducible --quiet) | gzip -n -1 >"$out.tmp"
	mv "$out.tmp" "$out"
}
