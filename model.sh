#!/bin/sh
# The CHAIN model checker (model/): every configuration, single faults.
#   ./model.sh            coarse tick (what CI runs, via cargo test -p tether-model)
#   ./model.sh --fine     half the tick
#   ./model.sh --pairs    pairs of faults: what the design does not promise
# Other arguments go to the checker (--only SUBSTRING, --skip FAULT).
# Runs niced, one checker thread; prints states, time and peak memory.
set -e
cd "$(dirname "$0")"
nice -n 10 cargo build -q --profile model -p tether-model
exec nice -n 10 target/model/tether-model "$@"
