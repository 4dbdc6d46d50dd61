#!/usr/bin/env bash
# The full test suite: unit, integration (PID namespaces, simulated watchdog)
# and VM (QEMU/TCG with i6300esb). Run as root on Debian: what the tests need
# from the system is installed here when missing (.ci/run installs it too).
set -euo pipefail
cd "$(dirname "$0")"

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
missing=()
have unshare || missing+=(util-linux)
have setpriv || missing+=(util-linux)
have prlimit || missing+=(util-linux)
have systemd-notify || missing+=(systemd)
have perl || missing+=(perl-base)
have qemu-system-x86_64 || missing+=(qemu-system-x86)
have mkfs.ext4 || missing+=(e2fsprogs)
have debugfs || missing+=(e2fsprogs)
have xz || missing+=(xz-utils)
have cc || missing+=(gcc)
have rsyslogd || missing+=(rsyslog)
have dumpe2fs || missing+=(e2fsprogs)
# The Debian appliance (vm-tests/tests/debian.rs): the image from the
# archive, a real ssh client, the host collector's forward (socat).
have mmdebstrap || missing+=(mmdebstrap)
have ssh || missing+=(openssh-client)
have ssh-keygen || missing+=(openssh-client)
have socat || missing+=(socat)
have lintian || missing+=(lintian)
have readelf || missing+=(binutils)
have dpkg-deb || missing+=(dpkg)
have promtool || missing+=(prometheus)
have prometheus-node-exporter || missing+=(prometheus-node-exporter)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "test.sh: missing ${missing[*]}; run as root (the suite needs root anyway)" >&2
        exit 1
    fi
    echo "test.sh: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# `cargo test` builds only the binaries of a package that has integration
# tests of its own; the integration crate runs the other packages' binaries
# (tether-init, tether-restarter, tetherctl, tether-watchdogd), so build them
# all first, in the same profile.
cargo build --workspace --bins
exec cargo test --workspace "$@"
