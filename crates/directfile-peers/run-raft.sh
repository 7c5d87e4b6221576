#!/usr/bin/env bash
# The Raft log benchmarks of issue 13 (README.md, "Raft logs"): the log level at 64 writers
# and at 1 writer (directfile-journal, raft-engine, RocksDB's WAL; fio's O_DSYNC QD1 write as
# the 1-writer floor), then three in-process openraft nodes under 64 concurrent client
# writes (directfile-raft, a RocksDB log store, a memory log store).
# Usage: crates/directfile-peers/run-raft.sh [DIR] [RUNTIME] [ROUNDS]
# (DIR on a disk file system, default /work/bench; scratch directories are removed after.)
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="${1:-/work/bench}"
runtime="${2:-5s}"
rounds="${3:-3}"
mkdir -p "$dir"
cargo build --release -p directfile-peers
bin=target/release/directfile-peers
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(uptime)"
"$bin" journal --writers 64 --record-bytes 256 --runtime "$runtime" --rounds "$rounds" \
  --only directfile,raft-engine,rocksdb "$dir"
echo
"$bin" journal --writers 1 --record-bytes 256 --runtime "$runtime" --rounds "$rounds" \
  --only directfile,raft-engine,rocksdb,fio "$dir"
echo
"$bin" raft --writers 64 --value-bytes 256 --runtime "$runtime" --rounds "$rounds" "$dir"
echo "== done $(date -u '+%H:%M UTC'), $(uptime)"
