# Sourced by guestimages/build.sh (after scripts/lib-debian-kernel.sh):
# stages Debian packages and the shared libraries their programs need into
# a directory tree for an extra initrd, from unpacked .debs only (nothing
# is installed on the host).
#
# Which packages: the ones asked for, whole (minus documentation), plus
# the shared-library packages (archive section libs) their ELF files need.
# Candidates are found by following Depends and Pre-Depends through
# library packages only (a package's other dependencies, such as perl or
# adduser, serve its scripts and maintainer scripts, not its programs);
# a candidate goes in only if it holds a soname some staged ELF file
# lists as DT_NEEDED, and the walk repeats over what it brings in. A
# soname no candidate holds fails the build. Libraries a program loads
# with dlopen (plugins, EGL vendors, NSS, gconv) are not followed.

# _colibri_pkg_depends PKG... prints "PKG DEP" for each dependency of the
# candidate versions of PKG... (Depends and Pre-Depends): the first real
# package of each group of alternatives, or, for a virtual package, its
# first provider.
_colibri_pkg_depends() {
	apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
		--no-replaces --no-enhances "$@" 2>/dev/null | awk '
		function flush() {
			if (chosen == "") chosen = provider
			if (chosen != "") print pkg, chosen
			chosen = ""; provider = ""; open = 0
		}
		/^[^ ]/ { if (open) flush(); pkg = $1; next }
		/^ *\|?(Pre)?Depends:/ {
			if (open && !alt) flush()
			alt = ($1 ~ /^\|/); open = 1
			name = $2; sub(/:.*/, "", name); virtual = (name ~ /^</)
			if (!virtual && chosen == "") chosen = name
			next
		}
		/^    [^ ]/ { if (virtual && provider == "") provider = $1; next }
		END { if (open) flush() }'
}

# _colibri_pkg_sections PKG... prints "PKG SECTION" for each.
_colibri_pkg_sections() {
	apt-cache show --no-all-versions "$@" 2>/dev/null |
		awk '/^Package:/ { p = $2 } /^Section:/ { print p, $2 }'
}

# colibri_pkg_closure PKG... prints PKG... and every shared-library
# package (archive section libs or oldlibs) reachable from them through
# Depends and Pre-Depends via library packages, one per line, sorted;
# cached until the apt lists change.
colibri_pkg_closure() {
	local p
	for p in "$@"; do
		colibri_pkg_version "$p" >/dev/null || {
			echo "images: Debian package $p not found (run 'apt-get update' first)" >&2
			return 1
		}
	done
	colibri_cached "pkg-closure $(printf '%s\n' "$@" | LC_ALL=C sort -u | tr '\n' ' ')" _colibri_pkg_closure "$@"
}

_colibri_pkg_closure() {
	local -A seen=()
	local frontier=("$@") next new p sec
	for p in "$@"; do seen[$p]=1; done
	# Breadth first, one apt-cache call per level rather than per package.
	while [ ${#frontier[@]} -gt 0 ]; do
		new=()
		while read -r _ p; do
			[ -n "${seen[$p]:-}" ] && continue
			seen[$p]=0
			new+=("$p")
		done < <(_colibri_pkg_depends "${frontier[@]}")
		next=()
		if [ ${#new[@]} -gt 0 ]; then
			while read -r p sec; do
				case "$sec" in libs | oldlibs | */libs | */oldlibs) seen[$p]=1; next+=("$p") ;; esac
			done < <(_colibri_pkg_sections "${new[@]}")
		fi
		frontier=("${next[@]}")
	done
	# (if, not &&: a last package left out would be the loop's status,
	# and under pipefail the closure's.)
	for p in "${!seen[@]}"; do if [ "${seen[$p]}" = 1 ]; then echo "$p"; fi; done | LC_ALL=C sort
}

# What is left out of every staged package.
_colibri_pkg_prune=(usr/share/doc usr/share/man usr/share/info usr/share/lintian usr/share/locale
	usr/share/bug usr/share/bash-completion usr/share/zsh usr/share/menu usr/share/gdb
	usr/lib/x86_64-linux-gnu/gconv lib/systemd usr/lib/systemd etc/init.d)

# _colibri_pkg_copy SRC DEST copies an unpacked package's tree into DEST
# without what _colibri_pkg_prune lists.
_colibri_pkg_copy() {
	local src=$1 dest=$2 args=() p
	for p in "${_colibri_pkg_prune[@]}"; do args+=(--exclude="./$p"); done
	(cd "$src" && tar -c "${args[@]}" --exclude=./.done .) | tar -x -C "$dest"
}

# _colibri_needed ROOT prints the DT_NEEDED sonames of every ELF file
# under ROOT, sorted and unique.
_colibri_needed() {
	find "$1" -type f -print0 | xargs -0 -r readelf -d 2>/dev/null |
		sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p' | LC_ALL=C sort -u
}

# _colibri_has_soname ROOT SONAME: ROOT has SONAME in a library directory
# the dynamic loader searches by default, or, for a package's private
# libraries found through its RUNPATH, anywhere under /lib or /usr/lib.
_colibri_has_soname() {
	local d
	for d in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib usr/lib lib64 usr/lib64; do
		if [ -e "$1/$d/$2" ] || [ -L "$1/$d/$2" ]; then return 0; fi
	done
	[ -n "$(find "$1/lib" "$1/usr/lib" -name "$2" -print -quit 2>/dev/null)" ]
}

# colibri_stage_pkgs DEST PKG... stages PKG... and the libraries they need
# into DEST (see the top of this file) and prints "name version" for each
# package staged, sorted.
colibri_stage_pkgs() {
	local dest=$1
	shift
	local -A dir=() ver=() staged=()
	local p closure soname added missing f
	closure=$(colibri_pkg_closure "$@") || return 1
	for p in $closure; do
		dir[$p]=$(colibri_fetch "$p") || return 1
		ver[$p]=$(colibri_pkg_version "$p")
	done
	mkdir -p "$dest"
	for p in "$@"; do
		_colibri_pkg_copy "${dir[$p]}" "$dest"
		staged[$p]=1
	done
	# Walk DT_NEEDED to a fixed point: each round stages the candidates
	# holding a soname that nothing staged provides yet.
	while :; do
		added=0
		for soname in $(_colibri_needed "$dest"); do
			_colibri_has_soname "$dest" "$soname" && continue
			for p in $closure; do
				[ -z "${staged[$p]:-}" ] && _colibri_has_soname "${dir[$p]}" "$soname" || continue
				_colibri_pkg_copy "${dir[$p]}" "$dest"
				staged[$p]=1
				added=1
				break
			done
		done
		[ $added = 1 ] || break
	done
	missing=
	for soname in $(_colibri_needed "$dest"); do
		_colibri_has_soname "$dest" "$soname" || missing="$missing $soname"
	done
	if [ -n "$missing" ]; then
		for soname in $missing; do
			echo "images: no library package among the dependencies of $* provides $soname, needed by:" >&2
			find "$dest" -type f | while read -r f; do
				readelf -d "$f" 2>/dev/null | grep -qF "[$soname]" && echo "  ${f#"$dest"}" >&2
			done
		done
		return 1
	fi
	for p in "${!staged[@]}"; do echo "$p ${ver[$p]}"; done | LC_ALL=C sort
}
