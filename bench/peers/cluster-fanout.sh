#!/usr/bin/env bash
# Two nodes on one Redis, wxhub's cluster mode against Socket.IO 4 with
# @socket.io/redis-adapter, in one run (docs/BENCHMARKS.md, "Two nodes"). It starts a
# redis-server of its own on a free port; then, for each repetition and each load, two
# wxhub nodes (--redis, release build) measured by `wxhub-bench fanout2` and stopped, and
# two Socket.IO nodes (socketio-redis-hub.js) on the same Redis measured by the same
# command with --proto socketio and stopped. The subscribers are split over the two nodes,
# the publisher is on node A. Prints one table (cluster-summary.py), every figure as
# "run 1 / run 2 / ...".
#
#   bench/peers/cluster-fanout.sh                        (from anywhere in the repository)
#   REPS=3 LOADS="1000x10 10000x10" OUT=/tmp/wxhub-cluster bench/peers/cluster-fanout.sh
#
# LOADS: SUBSCRIBERSxRATE (messages/s from node A), each a run per hub per repetition.
# Build first: cargo build --release --workspace (WXHUB_BIN and WXHUB_BENCH_BIN default to
# release/wxhub and release/wxhub-bench in cargo's target directory). The Socket.IO nodes
# run from a copy of this folder in WORK (default /tmp/wxhub-peers), where `npm ci`
# installs them, so the repository stays clean.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
REPS="${REPS:-3}"
LOADS="${LOADS:-1000x10 10000x10}"
PEERS="${PEERS:-wxhub socketio}"
OUT="${OUT:-/tmp/wxhub-cluster}"
WORK="${WORK:-/tmp/wxhub-peers}"
WARMUP_S="${WARMUP_S:-2}"
DURATION_S="${DURATION_S:-10}"
# A hub that falls behind still delivers after the window: what has not arrived this long
# after the last publish counts as not delivered.
DRAIN_S="${DRAIN_S:-30}"
source "$here/lib.sh"          # target_dir
source "$here/cluster-lib.sh"  # start_redis, start_wxhub_node, start_socketio_node, stop
target="$(target_dir "$here/../../Cargo.toml")"
hub="$(realpath -m "${WXHUB_BIN:-$target/release/wxhub}")"
bench="$(realpath -m "${WXHUB_BENCH_BIN:-$target/release/wxhub-bench}")"
for b in "$hub" "$bench"; do
  [ -x "$b" ] || { echo "cluster-fanout: no $b (cargo build --release --workspace)" >&2; exit 1; }
done
mkdir -p "$OUT" "$WORK"
if [[ " $PEERS " == *" socketio "* ]]; then
  cp "$here/package.json" "$here/package-lock.json" "$here/socketio-redis-hub.js" "$WORK/"
  [ -d "$WORK/node_modules/@socket.io/redis-adapter" ] || (cd "$WORK" && npm ci --silent)
fi
# 10,000 subscribers are 5,000 sockets per node, and as many in wxhub-bench.
ulimit -n "$(ulimit -Hn)"

start_redis "$OUT/redis.log"
redis_pid=$PID redis_url=$REDIS_URL
nodes=()
cleanup() { stop "${nodes[@]}" "$redis_pid"; }
trap cleanup EXIT
echo "redis-server pid $redis_pid on $redis_url; results in $OUT"

for rep in $(seq 1 "$REPS"); do
  for load in $LOADS; do
    n="${load%x*}" rate="${load#*x}"
    for p in $PEERS; do
      case "$p" in
        wxhub)
          start_wxhub_node "$hub" a "$redis_url" "$OUT/$p.a.log"; pa=$PID ua=$URL; nodes=("$pa")
          start_wxhub_node "$hub" b "$redis_url" "$OUT/$p.b.log"; pb=$PID ub=$URL; nodes+=("$pb") ;;
        socketio)
          start_socketio_node "$WORK" "$redis_url" "$OUT/$p.a.log"; pa=$PID ua=$URL; nodes=("$pa")
          start_socketio_node "$WORK" "$redis_url" "$OUT/$p.b.log"; pb=$PID ub=$URL; nodes+=("$pb") ;;
        *) echo "unknown peer $p (wxhub, socketio)" >&2; exit 2 ;;
      esac
      f="$OUT/$p.$load.$rep.txt"
      cmd=("$bench" fanout2 --proto "$p" --url "$ua" --url-b "$ub" --pid "$pa" --pid-b "$pb"
           --redis-pid "$redis_pid" --clients "$n" --rate "$rate" --warmup-s "$WARMUP_S"
           --duration-s "$DURATION_S" --drain-s "$DRAIN_S" --connect-timeout-s 120 --max-s 600 --quiet
           --label "$p.$load.$rep")
      { echo "# top before the run:"; top -bn1 | sed -n '1,3p;7,12p' | sed 's/^/# /'; } >"$f"
      printf '%q ' "${cmd[@]}" >>"$f"; echo >>"$f"
      echo "== $(date -u +%T) $p $n subscribers at $rate msg/s, rep $rep (load $(cut -d' ' -f1-3 /proc/loadavg))"
      timeout 660 "${cmd[@]}" >>"$f" 2>&1 || echo "   wxhub-bench exit $? (see $f)"
      grep -E '^  (connected|probe|deliveries|latency|cluster CPU|completeness|FAILED|errors)' "$f" \
        | cut -c1-200 | sed 's/^/ /' || true
      stop "${nodes[@]}"
      nodes=()
      sleep 1
    done
  done
done

python3 "$here/cluster-summary.py" "$OUT" "$REPS" "$LOADS" "$PEERS"
