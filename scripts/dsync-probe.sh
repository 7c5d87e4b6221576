#!/usr/bin/env bash
# dsync-probe.sh [SECONDS]: does an O_DSYNC direct write through io_uring reach stable storage
# on ext4, xfs and btrfs? For each file system, on a loop device backed by a file in target/,
# it runs `examples/randwrite` (4 KiB random overwrites, queue depth 1) with O_DSYNC on the
# io_uring driver and on the thread pool, and without O_DSYNC as a control, and counts the
# block layer's cache flushes (requests whose rwbs has an F: PREFLUSH, FUA, or a bare flush)
# that the loop device received (tracefs block:block_rq_issue). A file system that honours
# O_DSYNC on the asynchronous path issues about one flush per write; one that skips it issues
# about none, like the control. Needs root, losetup, mkfs.{ext4,xfs,btrfs} (xfsprogs,
# btrfs-progs) and tracefs. This is how `directfile::SyncStrategy::for_file_system` was chosen:
# see docs/ARCHITECTURE.md ("Durability per file system").
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-1}
[ "$(id -u)" = 0 ] || { echo "dsync-probe: needs root (loop devices, mount, tracefs)" >&2; exit 2; }
tracefs=/sys/kernel/tracing
[ -e $tracefs/events/block/block_rq_issue ] || mount -t tracefs nodev $tracefs
cargo build --release -q -p directfile --example randwrite
bin=target/release/examples/randwrite
work=$(pwd)/target/dsync-probe
mkdir -p "$work"
cleanup() {
  echo 0 >$tracefs/events/block/block_rq_issue/enable 2>/dev/null || true
  echo 0 >$tracefs/events/block/block_rq_issue/filter 2>/dev/null || true
  mountpoint -q "$work/mnt" && umount "$work/mnt"
  [ -n "${dev:-}" ] && losetup -d "$dev" 2>/dev/null
  rm -f "$work/disk.img"
}
trap cleanup EXIT
printf '%-6s %-8s %-6s %8s %8s %10s\n' fs driver dsync writes flushes flushes/write
for fs in ext4 xfs btrfs; do
  truncate -s 1G "$work/disk.img"
  dev=$(losetup --show -f "$work/disk.img")
  case $fs in
    ext4) mkfs.ext4 -q "$dev" ;;
    xfs) mkfs.xfs -q -f "$dev" ;;
    btrfs) mkfs.btrfs -q -f "$dev" >/dev/null ;;
  esac
  mkdir -p "$work/mnt"
  mount "$dev" "$work/mnt"
  major=$((16#$(stat -c %t "$dev"))) minor=$((16#$(stat -c %T "$dev")))
  echo "dev == $(((major << 20) | minor))" >$tracefs/events/block/block_rq_issue/filter
  # Lay the file out (data blocks written and synced), so the runs below are overwrites.
  "$bin" "$work/mnt/probe.dat" 1 1 >/dev/null
  for run in "uring dsync" "threads dsync" "uring none"; do
    set -- $run
    echo >$tracefs/trace
    echo 1 >$tracefs/events/block/block_rq_issue/enable
    out=$(DIRECTFILE_BACKEND=$1 "$bin" "$work/mnt/probe.dat" 1 "$seconds" "$2")
    echo 0 >$tracefs/events/block/block_rq_issue/enable
    writes=$(sed -n 's/.*(\([0-9]*\) ops).*/\1/p' <<<"$out")
    # rwbs is the field after the device number, e.g. "WS", "FWS", "WFS", "FN".
    flushes=$(grep -v '^#' $tracefs/trace | awk '{for (i = 1; i < NF; i++) if ($i ~ /^[0-9]+,[0-9]+$/) { print $(i + 1); break }}' | grep -c F || true)
    printf '%-6s %-8s %-6s %8s %8s %10.2f\n' "$fs" "$1" "$2" "$writes" "$flushes" "$(echo "$flushes / $writes" | bc -l)"
  done
  echo 0 >$tracefs/events/block/block_rq_issue/filter
  umount "$work/mnt"
  losetup -d "$dev"
  dev=
done
