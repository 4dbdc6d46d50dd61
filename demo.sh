#!/usr/bin/env bash
# tether demo: boots the demo appliance (tether-init as PID 1, watchdogd,
# restarter, a few services) on a Debian kernel in QEMU with an emulated
# i6300esb hardware watchdog, and walks through the ladder: a service
# crash, a hung restarter, a hung init ending in a hardware reset, and the
# second boot reporting why. About a minute once built.
#
#   ./demo.sh                  the scripted tour, then power off
#   ./demo.sh --interactive    the tour, then a shell on the VM's console
#   ./demo.sh --debian         the tour on a Debian 12 appliance (Debian's
#                              sshd, rsyslogd, cron, chronyd; ssh from the
#                              host; an ssh session survives the restarter's
#                              death); the first run builds the image with
#                              mmdebstrap from the archive (a few minutes)
#
# On a fresh Debian machine, as root: installs what is missing
# (qemu-system-x86, e2fsprogs, xz-utils; Rust must already be installed),
# downloads the kernel and busybox-static packages into target/vm-cache/,
# builds the static binaries into target/static/. Needs no KVM (TCG).
set -euo pipefail
cd "$(dirname "$0")"

debian=0
for arg in "$@"; do
    case "$arg" in
        --interactive) ;;
        --debian) debian=1 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf '\n=== %s ===\n' "$*"; }

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing=()
have qemu-system-x86_64 || missing+=(qemu-system-x86)
have mkfs.ext4 || missing+=(e2fsprogs)
have debugfs || missing+=(e2fsprogs)
have xz || missing+=(xz-utils)
if [ "$debian" = 1 ]; then
    have mmdebstrap || missing+=(mmdebstrap)
    have ssh || missing+=(openssh-client)
    have ssh-keygen || missing+=(openssh-client)
fi
have apt-get || { echo "demo.sh: needs a Debian-like system (apt-get)" >&2; exit 1; }
have dpkg || { echo "demo.sh: needs dpkg" >&2; exit 1; }

# The kernel and busybox-static are fetched with `apt-get download`, which
# needs package lists; so does installing anything.
if [ ${#missing[@]} -gt 0 ] || [ ! -d target/vm-cache/pkg/busybox-static ] || ! ls -d target/vm-cache/pkg/linux-image-* >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "demo.sh: run as root the first time (to install: ${missing[*]:-nothing}; and apt-get update)" >&2
        exit 1
    fi
    say "Installing what is missing: ${missing[*]:-(nothing; refreshing package lists)}"
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

if ! have cargo; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
have cargo || { echo "demo.sh: Rust (cargo) is needed: https://rustup.rs" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-target}"
if [ "$debian" = 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "demo.sh --debian: run as root (mmdebstrap, the image's owners)" >&2; exit 1; }
    say "Building the Debian demo driver (the static guest binaries are built by it)"
    cargo build -q -p tether-vm-tests --example demo_debian
    exec "$target_dir/debug/examples/demo_debian"
fi

say "Building the demo driver (the static guest binaries are built by it)"
cargo build -q -p tether-vm-tests --example demo
exec "$target_dir/debug/examples/demo" "$@"
