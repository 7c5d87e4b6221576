#!/usr/bin/env bash
# Runs every peer comparison of README.md: 4 KiB random O_DIRECT writes at QD1 and QD32,
# with and without O_DSYNC, then the journal. Usage: crates/directfile-peers/run-all.sh [DIR]
# (DIR defaults to /work/bench; the scratch file and journal directories are removed after).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="${1:-/work/bench}"
mkdir -p "$dir"
cargo build --release -p directfile-peers
bin=target/release/directfile-peers
file="$dir/directfile-peers.dat"
for qd in 1 32; do
  for dsync in "" "--dsync"; do
    "$bin" file --qd "$qd" $dsync --runtime 5s --size 256m --rounds 3 "$file"
    echo
  done
done
rm -f "$file"
"$bin" journal --writers 64 --record-bytes 256 --runtime 5s --rounds 3 "$dir"
