#!/usr/bin/env bash
# neighbour.sh DIR CMD...: runs CMD while a neighbour writes to the same disk, then stops the
# neighbour and removes its file. The neighbour is fio writing 128 KiB blocks at random offsets
# of a 1 GiB file in DIR, direct, 6 in flight (NEIGHBOUR_BS, NEIGHBOUR_QD change them).
#
# The development VM's virtio disk moves between phases with the host's load (fio's 4 KiB QD32
# rate from ~130k IOPS down to ~50k); this gives the slow phase on demand, so a change can be
# measured there too: on 2026-12-03 it took fio's QD32 rate from 126-140k to 48-58k IOPS, its
# QD32 O_DSYNC rate from 58-75k to 27-32k and its QD1 p50 from 66 to 305-334 µs.
#
#   scripts/neighbour.sh /work scripts/ab-bench.sh /work/ab.dat old/directfile new/directfile fio
#   scripts/neighbour.sh . target/release/directfile bench --compare --dsync
set -euo pipefail
dir=${1:?usage: neighbour.sh DIR CMD...}
shift
[ $# -gt 0 ] || { echo "usage: neighbour.sh DIR CMD..." >&2; exit 2; }
command -v fio >/dev/null || { echo "neighbour.sh: needs fio (apt-get install fio)" >&2; exit 1; }
file=$(mktemp -p "$dir" neighbour.XXXXXX)
fio_pid=
cleanup() {
  if [ -n "$fio_pid" ]; then
    kill "$fio_pid" 2>/dev/null || true
    wait "$fio_pid" 2>/dev/null || true
  fi
  rm -f "$file"
}
trap cleanup EXIT
fallocate -l 1G "$file"
fio --name=neighbour --filename="$file" --rw=randwrite --bs="${NEIGHBOUR_BS:-128k}" --direct=1 \
  --ioengine=libaio --iodepth="${NEIGHBOUR_QD:-6}" --time_based --runtime=86400 --size=1g \
  >/dev/null 2>&1 &
fio_pid=$!
sleep 2
kill -0 "$fio_pid" 2>/dev/null || { echo "neighbour.sh: the neighbour fio did not start" >&2; exit 1; }
"$@"
