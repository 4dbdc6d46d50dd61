#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time (issue #5).
#
#   ./fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 20 (7 targets: about 2.5 minutes of fuzzing
# plus one build). Each target starts from its committed seed corpus
# (fuzz/corpus/TARGET, read only) and writes what it finds to a scratch
# corpus, so the repository is never modified; a crash, a hang (> 2 s for
# one input), more than 512 MiB resident or one allocation of more than
# 128 MiB fails the target, and the input is kept in fuzz/artifacts/TARGET/.
#
# Needs the nightly toolchain (`cargo +nightly`) and cargo-fuzz; cargo-fuzz
# is installed with `cargo install cargo-fuzz --locked` when missing.
# Build products go to $CARGO_TARGET_DIR/fuzz (default target/fuzz).
# FUZZ_WORK=DIR keeps the grown corpora and the logs in DIR.
# Longer runs: see docs/HOSTILE.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
secs=${1:-20}
shift || true
case $secs in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
    ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

target_dir=${CARGO_TARGET_DIR:-$root/target}/fuzz
cd "$root"
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "fuzz.sh: building ${#targets[@]} targets"
cargo +nightly fuzz build --target-dir "$target_dir"

if [ -n "${FUZZ_WORK:-}" ]; then
    # Kept: the grown corpora and full logs (to minimise into fuzz/corpus).
    work=$FUZZ_WORK
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/tether-fuzz.XXXXXX")
    trap 'rm -rf "$work"' EXIT
fi
passed=0
failed=0
failures=()
start_all=$SECONDS
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "$root/fuzz/corpus/$t"
    log=$work/$t.log
    echo "fuzz.sh: $t for ${secs}s"
    status=0
    cargo +nightly fuzz run --target-dir "$target_dir" "$t" \
        "$work/corpus/$t" "$root/fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=128 \
        -timeout=2 -max_len=8192 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 || true)
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
        echo "fuzz.sh: $t ok: ${runs:-?}; ${cov:-?}"
    else
        failed=$((failed + 1))
        failures+=("$t")
        echo "fuzz.sh: $t FAILED (exit $status); last lines of its log:"
        tail -40 "$log"
    fi
done
echo "fuzz.sh: $((SECONDS - start_all))s for ${#targets[@]} targets"
echo "fuzz: $passed passed, $failed failed"
if [ "$failed" -gt 0 ]; then
    echo "fuzz.sh: failing targets: ${failures[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
