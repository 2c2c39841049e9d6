#!/usr/bin/env bash
# Hub CPU per connect with 10,000 clients held: run-matrix.sh's `loaded10k` pair of wsbench
# commands (10,000 holders, then 5,000 measured clients), with the hub's utime + stime
# read from /proc/PID/stat around the measured run (its settling included, so an upper
# bound). Peers as in run-matrix.sh; by default wxhub with clients that join and subscribe
# in the handshake, and the ws hub, whose clients only connect.
#   bench/peers/connect-cpu.sh                     (from the repository's root)
#   REPS=3 PEERS="wxhub-url ws" bench/peers/connect-cpu.sh
# Run run-matrix.sh once first: it builds wsbench and installs the Node hubs in $WORK.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
REPS="${REPS:-3}"
PEERS="${PEERS:-wxhub-url ws}"
WORK="${WORK:-/tmp/wxhub-peers}"
source "$here/lib.sh"
# wsbench as run-matrix.sh built it in $WORK, in cargo's target directory for it.
B="${WSBENCH:-}"
if [ -z "$B" ] && [ -f "$WORK/wsbench/Cargo.toml" ]; then
  B="$(target_dir "$WORK/wsbench/Cargo.toml")/release/wsbench"
fi
[ -x "$B" ] || { echo "no wsbench${B:+ at $B}: run bench/peers/run-matrix.sh once first" >&2; exit 1; }
export PEERS_DIR="$WORK"
# The hub: WXHUB_BIN, else the release build in cargo's target directory; absolute, for
# start.sh.
[ -n "${WXHUB_BIN:-}" ] || WXHUB_BIN="$(target_dir "$here/../../Cargo.toml")/release/wxhub"
export WXHUB_BIN="$(realpath -m "$WXHUB_BIN")"
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
log=$(mktemp)
for rep in $(seq 1 "$REPS"); do
  for p in $PEERS; do
    peer_flags "$p"
    read -r pid _port url < <("$here/start.sh" "$p")
    start_holders 10000 "$url$QS" "$log" || echo "rep $rep $p: holders not ready" >&2
    mapfile -t cmd < <(measured_names "$B" idle --clients 5000 --hold-s 0 --url "$url$QS" --pid "$pid" "${PF[@]}" "${COMMON[@]}")
    t0=$(cpu_ticks "$pid")
    line=$("${cmd[@]}" 2>&1 | grep '^idle:' || true)
    t1=$(cpu_ticks "$pid")
    echo "rep $rep $p: ${line:-no result} | hub CPU $(( (t1 - t0) * 1000000 / hz / 5000 )) us per connect"
    kill "$HOLD_PID" "$pid" 2>/dev/null || true
    wait "$HOLD_PID" "$pid" 2>/dev/null || true
    sleep 1
  done
done
rm -f "$log"
