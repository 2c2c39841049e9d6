#!/usr/bin/env bash
# Every wxhub-bench figure of docs/BENCHMARKS.md (under the table), REPS times in a row, each
# run against a hub it starts itself, with the hub's rate limit lifted. Writes one file
# per run to OUT and prints each run's main rows; the JSON line ends every file.
#
#   bench/sitting.sh                                  (from the repository's root)
#   REPS=2 OUT=/tmp/wxhub-sitting WXHUB_BIN=target/release/wxhub bench/sitting.sh
#   ONLY="fanout-rate-10k ticker-10k" bench/sitting.sh  (a subset, by name)
#
# Build first: cargo build --release && cargo build --release -p wxhub-bench
# (WXHUB_BIN and WXHUB_BENCH_BIN default to those, in cargo's target directory).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
REPS="${REPS:-2}"
OUT="${OUT:-/tmp/wxhub-sitting}"
# Cargo's target directory, wherever CARGO_TARGET_DIR or cargo's config puts it.
target="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
hub="${WXHUB_BIN:-$target/release/wxhub}"
bench="${WXHUB_BENCH_BIN:-$target/release/wxhub-bench}"
for b in "$hub" "$bench"; do
  [ -x "$b" ] || { echo "sitting: no $b (cargo build --release [-p wxhub-bench])" >&2; exit 1; }
done
mkdir -p "$OUT"
L=(--hub-bin "$hub" --hub-arg=--rate-limit=1000000 --hub-arg=--rate-burst=1000000)

# name, then the scenario and its arguments.
runs=(
  "idle-15k|idle --clients 15000 --burst 10 --hold-s 5"
  "idle-10k|idle --clients 10000 --burst 10 --hold-s 3"
  "fanout-sat-1k|fanout --clients 1000 --inflight 64"
  "fanout-sat-10k|fanout --clients 10000 --inflight 64"
  "fanout-sat-15k|fanout --clients 15000 --inflight 64"
  "fanout-rate-1k|fanout --clients 1000 --rate 10"
  "fanout-rate-10k|fanout --clients 10000 --rate 10"
  "fanout-rate-15k|fanout --clients 15000 --rate 10"
  "direct-1k|direct --clients 1000 --window 4"
  "chatroom-1k|chatroom --clients 1000 --rate 0.2"
  "ticker-10k|ticker --clients 10000 --tick-ms 1000"
  # The same two at the other's rate: what a delivery costs depends on how often each
  # session is written, not on which path fed it (docs/BENCHMARKS.md, known limit 1).
  "fanout-1hz-10k|fanout --clients 10000 --rate 1"
  "ticker-10hz-10k|ticker --clients 10000 --tick-ms 100"
)

for rep in $(seq 1 "$REPS"); do
  for r in "${runs[@]}"; do
    name="${r%%|*}"
    read -r -a args <<<"${r#*|}"
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
    f="$OUT/$name.$rep.txt"
    { echo "# top before the run:"; top -bn1 | sed -n '1,3p;7,12p' | sed 's/^/# /'; } >"$f"
    echo "# $bench ${args[*]} ${L[*]}" >>"$f"
    echo "== $(date +%T) $name rep $rep (load $(cut -d' ' -f1-3 /proc/loadavg))"
    "$bench" "${args[@]}" "${L[@]}" >>"$f" 2>&1 || echo "   wxhub-bench exit $? (see $f)"
    grep -E '^  (connected|connect rate|hub RSS|burst|held|deliveries|hub CPU|latency|tick age|completeness|direct|chatroom|ticker|everything else|other CPU)' "$f" \
      | cut -c1-180 | sed 's/^/ /' || true
  done
done
