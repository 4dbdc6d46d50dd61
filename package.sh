#!/usr/bin/env bash
# Builds the Debian package target/debian/tether_VERSION_amd64.deb from the
# workspace: static release binaries, staged under target/debian/stage, then
# `dpkg-deb --root-owner-group --build`. Needs dpkg-deb, gzip, strip
# (binutils) and the Rust toolchain; no network.
#
#   ./package.sh            build (cargo) and package
#   ./package.sh --no-build package the binaries already built
#                           (target/static/x86_64-unknown-linux-gnu/release)
#
# The version is the workspace's (Cargo.toml) with Debian revision -1.
# packaging/ holds the control file, conffiles, copyright, changelog,
# README.Debian and the default tether.toml; man/ the roff man pages.
set -euo pipefail
cd "$(dirname "$0")"
umask 022

build=1
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        *) echo "package.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

# The same static build as the VM tests' (vm-tests/src/binaries.rs):
# target/static, so that the two share it and the normal build is not
# invalidated. `--target` keeps RUSTFLAGS away from proc-macros.
target=x86_64-unknown-linux-gnu
static_dir="${TETHER_VM_TARGET:-target}/static"
if [ "$build" = 1 ]; then
    env -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS \
        CARGO_TARGET_DIR="$static_dir" RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --bins --profile release --target "$target" \
        -p tether-init -p tether-restarter -p tether-watchdogd
fi
bin="$static_dir/$target/release"

upstream=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$upstream" ] || { echo "package.sh: no version in Cargo.toml" >&2; exit 1; }
version="$upstream-1"
out=target/debian
stage="$out/stage"
deb="$out/tether_${version}_amd64.deb"

rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/sbin" "$stage/usr/sbin" "$stage/usr/bin" \
    "$stage/etc/tether/services" "$stage/usr/share/doc/tether" \
    "$stage/usr/share/man/man1" "$stage/usr/share/man/man5" "$stage/usr/share/man/man8" \
    "$stage/usr/share/lintian/overrides"

install_bin() { # SOURCE DEST
    [ -x "$bin/$1" ] || { echo "package.sh: $bin/$1 missing (build first)" >&2; exit 1; }
    if readelf --program-headers --dynamic "$bin/$1" | grep -q 'INTERP\|(NEEDED)'; then
        echo "package.sh: $bin/$1 is not statically linked" >&2; exit 1
    fi
    install -m 0755 "$bin/$1" "$stage/$2"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/$2"
}
install_bin tether-init sbin/tether-init
install_bin tether-restarter usr/sbin/tether-restarter
install_bin tether-watchdogd usr/sbin/tether-watchdogd
install_bin tetherctl usr/bin/tetherctl

install -m 0644 packaging/tether.toml "$stage/etc/tether/tether.toml"
doc="$stage/usr/share/doc/tether"
install -m 0644 packaging/copyright "$doc/copyright"
install -m 0644 packaging/README.Debian "$doc/README.Debian"
gzip -9n < packaging/changelog > "$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"
for page in man/*.[158]; do
    section=${page##*.}
    gzip -9n < "$page" > "$stage/usr/share/man/man$section/$(basename "$page").gz"
    chmod 0644 "$stage/usr/share/man/man$section/$(basename "$page").gz"
done
install -m 0644 packaging/lintian-overrides "$stage/usr/share/lintian/overrides/tether"

install -m 0644 packaging/conffiles "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" packaging/control.in > "$stage/DEBIAN/control"
chmod 0644 "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
    | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"
find "$stage" -type d -exec chmod 0755 {} +

rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
