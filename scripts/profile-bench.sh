#!/usr/bin/env bash
# Samples the whole machine while one `kasane bench` runs (perf record -a), and writes the
# samples as text for scripts/perf-per-tx.py, which divides the node processes' samples by the
# transactions the run committed. Below saturation two builds commit the same transactions, so
# their samples per 1,000 compare directly (docs/BENCHMARKS.md, "Where the CPU goes per
# transaction"). Needs `perf` and permission to sample every CPU.
#
#   scripts/profile-bench.sh BINARY TAG        (RATE=12000 DURATION=30 OUT=/tmp/profile-bench)
#
# BENCH_ARGS adds flags to the bench, e.g. BENCH_ARGS="--payload opaque".
#
# Writes OUT/TAG.log (the bench's output), OUT/TAG.json and OUT/TAG.samples.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 BINARY TAG" >&2
  exit 2
fi
binary=$1
tag=$2
out=${OUT:-/tmp/profile-bench}
mkdir -p "$out"
perf record -a -F "${FREQUENCY:-499}" -o "$out/$tag.data" -- \
  "$binary" bench --rate "${RATE:-12000}" --duration "${DURATION:-30}" --json "$out/$tag.json" ${BENCH_ARGS:-} > "$out/$tag.log" 2>&1
perf script -i "$out/$tag.data" -F comm,pid,tid,ip,sym > "$out/$tag.samples" 2>/dev/null
rm -f "$out/$tag.data"
grep -E "committed tps|cpu per" "$out/$tag.log" || true
echo "samples: $out/$tag.samples"
