#!/usr/bin/env bash
# Alternating `kasane bench` runs of several builds, each right after a same-run ceiling
# (`bench --ceiling-only` of the first build), so that the machine's drift falls on every build
# alike. docs/BENCHMARKS.md: on 2-core machines the same build moves by 20% within minutes, so
# compare builds by rounds like these, never by single runs.
#
#   scripts/bench-pairs.sh ROUNDS BINARY [BINARY ...]
#   RATE=26000 DURATION=30 OUT=/tmp/bench-pairs scripts/bench-pairs.sh 3 /tmp/kasane-a target/release/kasane
#
# Prints one line per run: time, build, round, committed tps, ceiling, fraction, blocks.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 ROUNDS BINARY [BINARY ...]" >&2
  exit 2
fi
rounds=$1
shift
rate=${RATE:-26000}
duration=${DURATION:-30}
out=${OUT:-/tmp/bench-pairs}
mkdir -p "$out"
field() { python3 -c "import json,sys; print('%.0f' % json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
for round in $(seq 1 "$rounds"); do
  for binary in "$@"; do
    name=$(basename "$binary")-$(echo "$binary" | md5sum | cut -c1-6)
    "$1" bench --ceiling-only > "$out/ceiling.json"
    "$binary" bench --rate "$rate" --duration "$duration" --json "$out/$name-$round.json" > "$out/$name-$round.log" 2>&1
    tps=$(field "$out/$name-$round.json" committed_tps)
    ceiling=$(field "$out/ceiling.json" tps)
    blocks=$(grep -oE '[0-9]+ blocks, [0-9.]+ blocks/s' "$out/$name-$round.log" | head -1)
    printf '%s %s round %s: committed %s tx/s, ceiling %s (%.1f%%), %s\n' \
      "$(date +%H:%M:%S)" "$binary" "$round" "$tps" "$ceiling" "$(python3 -c "print(100 * $tps / $ceiling)")" "$blocks"
  done
done
