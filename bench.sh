#!/usr/bin/env bash
# Benchmark: tether's restarter against runit and s6 (issue #7).
#
#   ./bench.sh [bench_supervisors options]      e.g. ./bench.sh --idle 5 --runs 1
#
# Run as root on Debian. Installs runit and s6 when missing (runit without
# its recommended runit-init/runit-run: only runsvdir/runsv/sv; it does not
# replace the host's init, and without systemd nothing starts on install),
# builds in release (the blocker service statically, in its own target
# directory), runs every workload, and writes the tables to
# target/bench/results.md and stdout. Progress goes to stderr.
# Defaults: N = 10, 100, 1000; 3 runs per figure; 30 s idle; 500 kills;
# root kill at the largest N with 10 probes. Only the root kill at N=1000:
#   ./bench.sh --workloads rootkill --supervisors tether,runit,s6
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
  echo "bench.sh: run as root (PID namespaces, /proc of other processes)" >&2
  exit 1
fi

if ! command -v runsvdir >/dev/null || ! command -v s6-svscan >/dev/null; then
  echo "== installing runit and s6" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends runit s6 util-linux >&2
fi

target=${CARGO_TARGET_DIR:-$PWD/target}
static_target=$target/bench-static
host=$(rustc -vV | sed -n 's/^host: //p')

echo "== building (release)" >&2
# The whole chain too: the root-kill workload runs tether-init as PID 1.
cargo build --release -q -p tether-restarter -p tether-init -p tether-watchdogd -p tether-integration \
  --bin tether-restarter --bin tetherctl --bin tether-init --bin tether-watchdogd --bin bench_supervisors >&2
# The service: static, so that exec costs the same under every supervisor.
# --target keeps RUSTFLAGS off build scripts and proc macros.
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$static_target \
  cargo build --release -q --target "$host" -p tether-integration --bin bench_blocker >&2

results=$PWD/target/bench/results.md
mkdir -p "$(dirname "$results")"
echo "== running (see target/bench/results.md when done)" >&2
start=$(date +%s)
"$target/release/bench_supervisors" \
  --blocker "$static_target/$host/release/bench_blocker" \
  --restarter "$target/release/tether-restarter" \
  --out "$results" "$@"
echo "== done in $(( $(date +%s) - start )) s: $results" >&2
