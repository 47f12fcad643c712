#!/usr/bin/env bash
# Builds the Debian package of Understudy with dpkg-deb alone (no debhelper,
# no debian/ directory): the binary, the systemd units of each role, the
# sample config as a conffile, and the docs.
#
# Usage: packaging/build-deb.sh        (or: make deb)
#
# Environment (all optional):
#   BIN          an already built understudy binary to package; default: run
#                `make build` and package ./bin/understudy
#   OUT_DIR      where the .deb goes; default: ./dist
#   DEB_VERSION  package version; default: derived from `$BIN version`
#                (v1.2.3 -> 1.2.3, v1.2.3-4-gabc -> 1.2.3+4.gabc, an
#                untagged commit abc -> 0.0.0~dev+gabc)
#   DEB_ARCH     default: dpkg --print-architecture (the binary must match)
#   DEB_COMPRESS dpkg-deb compressor: xz (default), gzip, zstd or none
#   STRIP        1 (default) drops DWARF debug info from the packaged copy;
#                symbols stay, so stack traces are unchanged. 0 keeps it.
#
# Prints the path of the .deb as its last line.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

die() { echo "build-deb: $*" >&2; exit 1; }

for tool in dpkg-deb dpkg; do
	command -v "$tool" >/dev/null || die "$tool not found: install dpkg (Debian and Ubuntu have it), or build on such a machine"
done

# --- the binary -------------------------------------------------------------
if [[ -z "${BIN:-}" ]]; then
	make --no-print-directory build >&2
	BIN="$root/bin/understudy"
fi
[[ -x "$BIN" ]] || die "binary $BIN is missing or not executable: run make build, or set BIN=PATH"
"$BIN" version >/dev/null 2>&1 || die "$BIN does not run (\`$BIN version\` failed): was it built for this machine?"

# --- version and architecture ------------------------------------------------
# The package takes the version the binary reports (the Makefile stamps it
# from `git describe --tags --always --dirty`), so the two always agree.
# Debian versions must start with a digit and may not contain '-' (it would
# start a Debian revision); '~' sorts before anything, so a dev build is
# superseded by any release.
#   v1.2.3 -> 1.2.3    v1.2.3-4-gabc1234-dirty -> 1.2.3+4.gabc1234.dirty
#   v1.3.0-rc1 -> 1.3.0~rc1    abc1234-dirty -> 0.0.0~dev+gabc1234.dirty
#   dev (an unstamped go build) -> 0.0.0~dev
deb_version() {
	local v="$1"
	case "$v" in
	v[0-9]* | [0-9]*.*)
		v="${v#v}"
		sed -E 's/-([0-9]+)-g([0-9a-f]+)/+\1.g\2/; s/-dirty$/.dirty/; s/-/~/g' <<<"$v"
		;;
	*)
		if [[ "$v" =~ ^([0-9a-f]{7,40})(-dirty)?$ ]]; then
			echo "0.0.0~dev+g${BASH_REMATCH[1]}${BASH_REMATCH[2]:+.dirty}"
		else
			echo "0.0.0~dev"
		fi
		;;
	esac
}
bin_version="$("$BIN" version | awk '{ print $2 }')"
version="${DEB_VERSION:-$(deb_version "$bin_version")}"
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "version $version is not a Debian version without revision (digits first; letters, digits, . + ~): set DEB_VERSION"
arch="${DEB_ARCH:-$(dpkg --print-architecture)}"

# The binary links only libc (cgo, for SQLite); require the newest glibc
# symbol version it uses, so that apt refuses a too-old system up front.
depends="libc6"
if command -v objdump >/dev/null; then
	glibc="$(objdump -T "$BIN" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1 || true)"
	if [[ -n "$glibc" ]]; then
		depends="libc6 (>= $glibc)"
	fi
fi

# --- the tree ----------------------------------------------------------------
stage="$(mktemp -d "${TMPDIR:-/tmp}/understudy-deb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
pkg="$stage/understudy"
doc="$pkg/usr/share/doc/understudy"
install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" \
	"$pkg/etc/default" "$doc/examples"

install -m 0755 "$BIN" "$pkg/usr/bin/understudy"
if [[ "${STRIP:-1}" == 1 ]] && command -v strip >/dev/null; then
	strip --strip-debug "$pkg/usr/bin/understudy"
fi
install -m 0644 "$here/systemd/understudy-replicate.service" "$here/systemd/understudy-follow.service" \
	"$pkg/lib/systemd/system/"
install -m 0644 "$here/understudy.yml" "$pkg/etc/understudy.yml"
# Secrets live here, readable by root only; systemd reads it before the
# service drops any privileges.
install -m 0600 "$here/understudy.default" "$pkg/etc/default/understudy"

install -m 0644 "$root/README.md" "$doc/README.md"
install -m 0644 "$here/understudy.yml" "$doc/examples/understudy.yml"
install -m 0644 "$here/systemd/understudy-exec.service" "$doc/examples/understudy-exec.service"
{
	cat "$here/copyright"
	# The Go modules linked into this binary, as the binary itself records them.
	if command -v go >/dev/null && mods="$(go version -m "$BIN" 2>/dev/null | awk '$1 == "dep" { print "   " $2 " " $3 }')" && [[ -n "$mods" ]]; then
		printf -- '- These Go modules, each under the license in its own source:\n\n'
		echo "$mods"
	fi
} >"$doc/copyright"
chmod 0644 "$doc/copyright"

# --- control files -----------------------------------------------------------
installed_size="$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)"
cat >"$pkg/DEBIAN/control" <<EOF
Package: understudy
Version: $version
Architecture: $arch
Maintainer: Understudy developers
Installed-Size: $installed_size
Depends: $depends
Section: database
Priority: optional
Description: SQLite replication to S3 with verified warm standbys
 Understudy runs beside a one-writer SQLite application and ships every
 committed WAL transaction to S3, an S3-compatible store or a directory, in
 Litestream 0.5's LTX layout. Followers keep a live, read-only, verified copy,
 and restore rebuilds the database at any position still in the store.
 .
 The package installs the understudy-replicate (primary) and
 understudy-follow (standby) systemd units without enabling or starting them.
 Edit /etc/understudy.yml, then: systemctl enable --now understudy-replicate
EOF
printf '/etc/understudy.yml\n/etc/default/understudy\n' >"$pkg/DEBIAN/conffiles"
for script in postinst prerm postrm; do
	install -m 0755 "$here/deb/$script" "$pkg/DEBIAN/$script"
done
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f ! -path './etc/*' -printf '%P\0' | sort -z | xargs -0 md5sum) >"$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/conffiles" "$pkg/DEBIAN/md5sums"

# --- build -------------------------------------------------------------------
out_dir="${OUT_DIR:-$root/dist}"
mkdir -p "$out_dir"
out="$(cd "$out_dir" && pwd)/understudy_${version}_${arch}.deb"
# --root-owner-group: files belong to root in the package whoever builds it.
# SOURCE_DATE_EPOCH (default: the commit's time) caps the files' times, so the
# same commit and binary give the same package.
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]] && t="$(git log -1 --format=%ct 2>/dev/null)"; then
	export SOURCE_DATE_EPOCH="$t"
fi
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$pkg" "$out" >&2
echo "$out"
