#!/usr/bin/env bash
# The peer comparison of docs/BENCHMARKS.md: every hub, every test, REPS times, side by
# side in one sitting, measured by the neutral, protocol-agnostic wsbench (vendored in
# wsbench/). Each run gets a freshly started hub (start.sh) and one wsbench process;
# `top` is recorded before each run, since the machine is shared.
#   bench/peers/run-matrix.sh                      (from the repository's root)
#   REPS=2 PEERS="wxhub ws socketio" TESTS="idle10k sat1k sat10k rate1k rate10k" \
#     OUT=/tmp/wsbench-results WORK=/tmp/wxhub-peers bench/peers/run-matrix.sh
#   PEERS="wxhub-bare ws" TESTS=idle10k OUT=/tmp/wsbench-bare bench/peers/run-matrix.sh  (bare connects)
#   PEERS="wxhub wxhub-url wxhub-bare ws" TESTS="idle10k loaded10k" OUT=/tmp/wsbench-connect bench/peers/run-matrix.sh
# It copies this folder to $WORK, runs `npm ci` and builds wsbench there (the repository
# stays clean), then prints the summary tables (summarize.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
REPS="${REPS:-2}"
PEERS="${PEERS:-wxhub ws socketio}"
TESTS="${TESTS:-idle10k sat1k sat10k rate1k rate10k}"
OUT="${OUT:-/tmp/wsbench-results}"
WORK="${WORK:-/tmp/wxhub-peers}"
# peer_flags, COMMON, start_holders: the clients each hub gets, shared with connect-cpu.sh;
# target_dir.
source "$here/lib.sh"
# The hub: WXHUB_BIN, else the release build in cargo's target directory; absolute, for
# start.sh.
[ -n "${WXHUB_BIN:-}" ] || WXHUB_BIN="$(target_dir "$here/../../Cargo.toml")/release/wxhub"
export WXHUB_BIN="$(realpath -m "$WXHUB_BIN")"
mkdir -p "$OUT" "$WORK"
cp -r "$here/." "$WORK/"
if [[ " $PEERS " == *" ws "* || " $PEERS " == *" socketio "* ]]; then
  [ -d "$WORK/node_modules" ] || (cd "$WORK" && npm ci --silent)
fi
B="${WSBENCH:-$(target_dir "$WORK/wsbench/Cargo.toml")/release/wsbench}"
[ -x "$B" ] || cargo build --release --quiet --manifest-path "$WORK/wsbench/Cargo.toml"
export PEERS_DIR="$WORK"
test_flags() {
  HOLDERS=0
  case "$1" in
    idle10k) TF=(idle --clients 10000 --hold-s 10) ;;
    # The connect rate with 10,000 already connected: a first wsbench connects 10,000
    # holders (same flags) and keeps them; the measured one connects 5,000 more.
    loaded10k) TF=(idle --clients 5000 --hold-s 2); HOLDERS=10000 ;;
    idle15k) TF=(idle --clients 15000 --hold-s 10) ;;
    sat1k)   TF=(fanout --clients 1000 --inflight 64 --warmup-s 2 --duration-s 10 --lost-after-s 30) ;;
    sat10k)  TF=(fanout --clients 10000 --inflight 64 --warmup-s 2 --duration-s 10 --lost-after-s 30) ;;
    sat15k)  TF=(fanout --clients 15000 --inflight 64 --warmup-s 2 --duration-s 10 --lost-after-s 30) ;;
    rate1k)  TF=(fanout --clients 1000 --rate 10 --warmup-s 2 --duration-s 10) ;;
    rate10k) TF=(fanout --clients 10000 --rate 10 --warmup-s 2 --duration-s 10) ;;
  esac
}

for rep in $(seq 1 "$REPS"); do
  for t in $TESTS; do
    for p in $PEERS; do
      peer_flags "$p"; test_flags "$t"
      read -r pid _port url < <("$here/start.sh" "$p")
      f="$OUT/$p.$t.$rep.txt"
      cmd=("$B" "${TF[@]}" --url "$url$QS" --pid "$pid" "${PF[@]}" "${COMMON[@]}" --label "$p.$t.$rep")
      hold_pid=""
      if [ "$HOLDERS" -gt 0 ]; then
        mapfile -t cmd < <(measured_names "${cmd[@]}")
        h="$OUT/holders.$p.$t.$rep.log"
        start_holders "$HOLDERS" "$url$QS" "$h" || true
        hold_pid=$HOLD_PID
        grep '^idle:' "$h" | sed 's/^/   holders: /' || echo "   holders not ready: see $h"
      fi
      { echo "# top before the run:"; top -bn1 | sed -n '1,3p;7,12p' | sed 's/^/# /'; } > "$f"
      printf '%q ' "${cmd[@]}" >> "$f"; echo >> "$f"
      echo "== $(date +%T) $p $t rep $rep (load $(cut -d' ' -f1-3 /proc/loadavg))"
      timeout 960 "${cmd[@]}" >> "$f" 2>&1 || echo "wsbench exit $? for $p $t $rep" | tee -a "$f"
      grep -E '^(idle|fanout|inflight|rate|latency|hub|held|errors)' "$f" | sed 's/^/   /' || true
      [ -z "$hold_pid" ] || { kill "$hold_pid" 2>/dev/null || true; wait "$hold_pid" 2>/dev/null || true; }
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      sleep 1
    done
  done
done
python3 "$here/summarize.py" "$OUT"
