#!/usr/bin/env bash
# The full test suite: unit, integration (PID namespaces, simulated watchdog)
# and VM (QEMU/TCG with i6300esb). Run as root on Debian; .ci/run installs the
# system packages first.
set -euo pipefail
cd "$(dirname "$0")"
# `cargo test` builds only the binaries of a package that has integration
# tests of its own; the integration crate runs the other packages' binaries
# (tether-init, tether-restarter, tetherctl, tether-watchdogd), so build them
# all first, in the same profile.
cargo build --workspace --bins
exec cargo test --workspace "$@"
