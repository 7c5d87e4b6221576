#!/usr/bin/env bash
# A/B of directfile builds (and fio) on one file, alternated round by round: the way a change on
# the hot path is measured before and after. Prints one line per run (name, IOPS, p50 µs, CPU µs
# per write) and, at the end, the medians, with each build's median ratio to the same round's fio.
#
#   scripts/ab-bench.sh FILE BIN_OR_fio...
#   QD=32 DSYNC=1 ROUNDS=6 RUNTIME=2 BACKEND=uring scripts/ab-bench.sh /mnt/disk/ab.dat old/directfile new/directfile fio
#   scripts/ab-bench.sh /mnt/disk/ab.dat target/release/directfile target/release/directfile@threads fio
#
# BIN@BACKEND runs that build on that backend (the others on $BACKEND). A comma adds bench flags
# to one entry, each comma a space: BIN,--spin,0 or BIN@threads,--spin,2ms,--ring-only (for
# `bench --spin` and `--ring-only`, say). The entry, flags and all, names its row.
# FIO_ARGS adds options to fio's command line (--thread, say: see BENCHMARKS.md on sessions).
# CPUS=LIST pins every run, fio's too, to those CPUs (taskset -c LIST). On a VM whose disk has
# one queue, the vCPU that takes its interrupt (grep virtio /proc/interrupts) finishes a QD1
# write sooner than the other; an unpinned run lands on either, and stays there.
# fio runs psync at QD1 and io_uring at higher depths (direct=1, 4 KiB random writes). fio's CPU
# per write is its usr+sys share of the job's runtime in ms (`job_runtime`; its `elapsed` is whole
# seconds and counts the set-up: 3 for a 2 s run, which made fio's CPU look half as high again).
set -euo pipefail
file=${1:?usage: ab-bench.sh FILE BIN_OR_fio...}
shift
qd=${QD:-1}
rounds=${ROUNDS:-5}
runtime=${RUNTIME:-2}
backend=${BACKEND:-uring}
dsync_flag=""
fio_sync=""
if [ "${DSYNC:-0}" = 1 ]; then dsync_flag=--dsync; fio_sync=--sync=dsync; fi
pin=""
[ -n "${CPUS:-}" ] && pin="taskset -c $CPUS"
[ -f "$file" ] || fallocate -l 256M "$file"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq 1 "$rounds"); do
  for b in "$@"; do
    if [ "$b" = fio ]; then
      if [ "$qd" = 1 ]; then engine=--ioengine=psync; else engine="--ioengine=io_uring --iodepth=$qd"; fi
      # shellcheck disable=SC2086
      $pin fio --name=ab --filename="$file" --rw=randwrite --bs=4k --direct=1 $fio_sync $engine ${FIO_ARGS:-} \
        --runtime="$runtime" --time_based --size=256m --output-format=json 2>/dev/null |
        python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; w=j['write']; print('fio', round(w['iops']), w['clat_ns']['percentile']['50.000000']/1000, round((j['usr_cpu']+j['sys_cpu'])/100*j['job_runtime']*1e3/max(w['total_ios'],1),2))"
    else
      entry=${b%%,*}
      flags=""
      [ "$entry" != "$b" ] && flags=${b#*,} && flags=${flags//,/ }
      bin=${entry%@*}
      be=$backend
      [ "$bin" != "$entry" ] && be=${entry##*@}
      # shellcheck disable=SC2086
      $pin "$bin" bench --backend "$be" --qd "$qd" $dsync_flag --runtime "${runtime}s" --json $flags "$file" 2>/dev/null |
        python3 -c "import json,sys; d=json.loads(sys.stdin.readline()); print(sys.argv[1], round(d['iops']), d['lat_us_p50'], round((d['cpu_usr_s']+d['cpu_sys_s'])*1e6/d['ops'],2))" "$b"
    fi
  done
done | tee "$out"
echo "medians:"
python3 - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, iops, p50, cpu = line.split()
    runs[name].append((float(iops), float(p50), float(cpu)))
fio = runs.get("fio")
for name, v in runs.items():
    line = f"{name:40} IOPS {statistics.median(x[0] for x in v):9.0f}  p50 {statistics.median(x[1] for x in v):7.1f} us  CPU/write {statistics.median(x[2] for x in v):6.1f} us"
    if fio and name != "fio":
        # Paired with the same round's fio: the device's drift between rounds cancels.
        iops = sorted(a[0] / f[0] for a, f in zip(v, fio) if f[0] > 0)
        p50 = sorted(a[1] / f[1] for a, f in zip(v, fio) if f[1] > 0)
        above = sum(r >= 1.0 for r in iops)
        line += f"  x fio per round: IOPS {statistics.median(iops):.2f} ({above}/{len(iops)} rounds >= 1), p50 {statistics.median(p50):.2f}"
    print(line)
PY
