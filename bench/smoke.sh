#!/usr/bin/env bash
# CI smoke of every wxhub-bench scenario, so the load generator never rots: small N,
# a couple of seconds each, no thresholds. Starts its own hub on a free loopback port
# for each scenario (wxhub-bench --hub-bin) and fails only if the tool itself fails
# (no client ready, nothing delivered, the hub died, a crash). `fanout2` gets a
# redis-server of its own on a free port and two hub nodes on it (`redis-server` must be
# installed), and must also deliver every message to every subscriber exactly once.
#
#   bench/smoke.sh                    # from anywhere in the repository
#   WXHUB_BIN=path/to/wxhub bench/smoke.sh
#
# WXHUB_BIN: the hub (default: release/wxhub, else debug/wxhub, in cargo's target
#   directory, which CARGO_TARGET_DIR or cargo's config may move from target/).
# WXHUB_BENCH_BIN: a built wxhub-bench (default: `cargo build -p wxhub-bench`, debug).
# SMOKE_CLIENTS (default 50) and SMOKE_SECONDS (default 1.5) size every scenario.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

hub="${WXHUB_BIN:-}"
if [ -z "$hub" ]; then
  target="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  for c in "$target/release/wxhub" "$target/debug/wxhub"; do
    if [ -x "$c" ]; then hub="$c"; break; fi
  done
fi
if [ -z "$hub" ] || [ ! -x "$hub" ]; then
  echo "smoke: no hub binary${hub:+ at $hub} (cargo build, or set WXHUB_BIN)" >&2
  exit 1
fi

bench="${WXHUB_BENCH_BIN:-}"
if [ -z "$bench" ]; then
  # Cargo says where it put the binary.
  bench="$(cargo build --quiet -p wxhub-bench --message-format=json-render-diagnostics \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "wxhub-bench":
        print(m["executable"])')"
fi

n="${SMOKE_CLIENTS:-50}"
secs="${SMOKE_SECONDS:-1.5}"
logdir="$(mktemp -d "${TMPDIR:-/tmp}/wxhub-smoke.XXXXXX")"
# The hub's per-session rate limit (50 commands/s by default) would refuse a publisher
# that publishes as fast as the hub delivers: lift it for the load generator.
timing=(--warmup-s 0.5 --duration-s "$secs" --settle-s 0.2 --settle-max-s 5 --drain-s 5
        --connect-timeout-s 20 --max-s 60 --quiet)
common=(--hub-bin "$hub" --hub-arg=--rate-limit=1000000 --hub-arg=--rate-burst=1000000 "${timing[@]}")

failed=0
ran=0
run() {
  local name="$1"; shift
  local out="$logdir/$name.txt"
  ran=$((ran + 1))
  local start=$SECONDS
  if timeout 90 "$bench" "$@" --hub-log "$logdir/$name.hub.log" --label "smoke.$name" >"$out" 2>&1; then
    # The line that says what was measured, for the CI log.
    local what
    what="$(grep -E '^  (deliveries|direct|chatroom|ticker|connected|hub RSS after idle) ' "$out" | tail -1 | sed 's/^ *//')"
    echo "ok   $name ($((SECONDS - start)) s): $what"
  else
    failed=$((failed + 1))
    echo "FAIL $name (exit $?), output:"
    sed 's/^/     /' "$out"
    if [ -s "$logdir/$name.hub.log" ]; then
      echo "     hub log:"
      tail -20 "$logdir/$name.hub.log" | sed 's/^/     /'
    fi
  fi
}

run idle            idle     --clients "$n" --burst 5 --hold-s 0.5 "${common[@]}"
run idle-handshake  idle     --clients "$n" --burst 5 --hold-s 0.5 --group bench --join-in-handshake "${common[@]}"
run fanout-saturate fanout   --clients "$n" --inflight 16 "${common[@]}"
run fanout-rate     fanout   --clients "$n" --rate 100 "${common[@]}"
run direct          direct   --clients "$((n / 2 > 0 ? n / 2 : 1))" --window 2 "${common[@]}"
run chatroom        chatroom --clients "$n" --rate 2 "${common[@]}"
run ticker          ticker   --clients "$n" --tick-ms 100 "${common[@]}"
run groups          groups   --clients "$n" --groups 3 --cycles 2 --idle-s 1 --sample-s 0.5 "${common[@]}"

# Two nodes of a cluster: a redis-server and two hub nodes of the smoke's own, on free
# ports (bench/peers/cluster-lib.sh), the subscribers split over them.
source "$root/bench/peers/cluster-lib.sh"
cluster_smoke() {
  local name=fanout2 out="$logdir/fanout2.txt" start=$SECONDS pids=() ok=0 redis a b pa pb
  ran=$((ran + 1))
  if start_redis "$logdir/redis.log"; then
    redis=$PID; pids+=("$PID")
    if start_wxhub_node "$hub" a "$REDIS_URL" "$logdir/fanout2.a.log"; then
      pa=$PID; a=$URL; pids+=("$PID")
      if start_wxhub_node "$hub" b "$REDIS_URL" "$logdir/fanout2.b.log"; then
        pb=$PID; b=$URL; pids+=("$PID")
        if timeout 60 "$bench" fanout2 --url "$a" --url-b "$b" --pid "$pa" --pid-b "$pb" \
             --redis-pid "$redis" --clients "$n" --rate 50 --probe-s 10 "${timing[@]}" \
             --label smoke.fanout2 >"$out" 2>&1 \
           && grep -Eq '"undelivered":0[,}]' "$out" && grep -Eq '"duplicates":0[,}]' "$out"; then
          ok=1
        fi
      fi
    fi
  fi >"$logdir/fanout2.start.log" 2>&1
  stop "${pids[@]}"
  if [ "$ok" = 1 ]; then
    echo "ok   $name ($((SECONDS - start)) s): $(grep -E '^  deliveries ' "$out" | sed 's/^ *//')"
  else
    failed=$((failed + 1))
    echo "FAIL $name, output:"
    cat "$logdir/fanout2.start.log" "$out" 2>/dev/null | sed 's/^/     /'
    for l in "$logdir"/fanout2.[ab].log; do
      [ -s "$l" ] && { echo "     $l:"; tail -20 "$l" | sed 's/^/     /'; }
    done
  fi
}
cluster_smoke

# The tool must refuse anything but loopback before opening a socket.
ran=$((ran + 1))
if "$bench" idle --url ws://192.0.2.1:80/ws --clients 1 >"$logdir/refuse.txt" 2>&1; then
  failed=$((failed + 1))
  echo "FAIL refuse-remote: a non-loopback target was accepted"
else
  echo "ok   refuse-remote: $(head -1 "$logdir/refuse.txt")"
fi

rm -rf "$logdir"
echo "smoke: $((ran - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
