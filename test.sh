#!/usr/bin/env bash
# The full test suite: unit, integration (PID namespaces, simulated watchdog)
# and VM (QEMU/TCG with i6300esb). Run as root on Debian; .ci/run installs the
# system packages first.
set -euo pipefail
cd "$(dirname "$0")"
exec cargo test --workspace "$@"
