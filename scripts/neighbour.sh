#!/usr/bin/env bash
# neighbour.sh DIR CMD...: runs CMD while a neighbour writes to the same disk, then stops the
# neighbour and removes its file. The neighbour is fio writing 128 KiB blocks at random offsets
# of a 1 GiB file in DIR, direct, 6 in flight (NEIGHBOUR_BS, NEIGHBOUR_QD change them).
#
# The development VM's virtio disk moves between phases with the host's load; this gives the
# slow phase on demand, so a change can be measured there too (what it does to fio's own rates:
# docs/BENCHMARKS.md, "A quiet disk and a busy one").
#
#   scripts/neighbour.sh /work scripts/ab-bench.sh /work/ab.dat old/directfile new/directfile fio
#   scripts/neighbour.sh . target/release/directfile bench --compare --dsync
set -euo pipefail
dir=${1:?usage: neighbour.sh DIR CMD...}
shift
[ $# -gt 0 ] || { echo "usage: neighbour.sh DIR CMD..." >&2; exit 2; }
command -v fio >/dev/null || { echo "neighbour.sh: needs fio (apt-get install fio)" >&2; exit 1; }
file=$(mktemp -p "$dir" neighbour.XXXXXX)
log=$(mktemp)
fio_pid=
cleanup() {
  if [ -n "$fio_pid" ]; then
    kill "$fio_pid" 2>/dev/null || true
    wait "$fio_pid" 2>/dev/null || true
  fi
  rm -f "$file" "$log"
}
trap cleanup EXIT
fallocate -l 1G "$file"
fio --name=neighbour --filename="$file" --rw=randwrite --bs="${NEIGHBOUR_BS:-128k}" --direct=1 \
  --ioengine=libaio --iodepth="${NEIGHBOUR_QD:-6}" --time_based --runtime=86400 --size=1g \
  >"$log" 2>&1 &
fio_pid=$!
sleep 2
if ! kill -0 "$fio_pid" 2>/dev/null; then
  echo "neighbour.sh: the neighbour fio on $file stopped at once; fio said:" >&2
  cat "$log" >&2
  exit 1
fi
"$@"
