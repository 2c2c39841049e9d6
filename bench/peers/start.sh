#!/usr/bin/env bash
# Start one hub on 127.0.0.1 in the background and print "PID PORT URL".
#   start.sh wxhub|wxhub-bare|wxhub-url|ws|socketio
# wxhub:    this project's hub (wxhub-bare, wxhub-url: the same hub, for clients that only
#           connect, or that join and subscribe in the handshake's query); WXHUB_BIN (default
#           release/wxhub in cargo's target directory), on 127.0.0.1:8083,
#           with the per-session rate limit lifted (the load generator's publisher sends
#           thousands of commands per second; wxhub refuses past 50/s by default).
# ws:       ws-hub.js (npm ws) on 127.0.0.1:8081.
# socketio: socketio-hub.js (npm socket.io) on 127.0.0.1:8082.
# The Node hubs need `npm ci` in PEERS_DIR (default: this folder). Logs go to
# ${PEER_LOG_DIR:-/tmp/peer-logs}/<peer>.log.
# Vendored from the neutral peer kit the issue points at (shared/bench/start.sh), with
# the rate limit and the node_modules location made explicit.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
peers="${PEERS_DIR:-$here}"
peer="${1:?usage: start.sh wxhub|wxhub-bare|wxhub-url|ws|socketio}"
logdir="${PEER_LOG_DIR:-/tmp/peer-logs}"
mkdir -p "$logdir"
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
case "$peer" in
  wxhub|wxhub-bare|wxhub-url)
    bin="${WXHUB_BIN:-}"
    # Else in cargo's target directory, wherever CARGO_TARGET_DIR or cargo's config puts it.
    if [ -z "$bin" ]; then
      bin="$(cargo metadata --format-version 1 --no-deps --manifest-path "$here/../../Cargo.toml" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/wxhub"
    fi
    [ -x "$bin" ] || { echo "no wxhub binary at $bin (cargo build --release)" >&2; exit 1; }
    port=8083; url="ws://127.0.0.1:8083/ws"
    RUST_LOG=warn WXHUB_RATE_LIMIT="${WXHUB_RATE_LIMIT:-1000000}" WXHUB_RATE_BURST="${WXHUB_RATE_BURST:-1000000}" \
      "$bin" --bind 127.0.0.1:8083 >"$logdir/wxhub.log" 2>&1 &
    ;;
  ws)
    port=8081; url="ws://127.0.0.1:8081/"
    (cd "$peers" && exec node ws-hub.js "$port") >"$logdir/ws.log" 2>&1 &
    ;;
  socketio)
    port=8082; url="ws://127.0.0.1:8082/socket.io/?EIO=4&transport=websocket"
    (cd "$peers" && exec node socketio-hub.js "$port") >"$logdir/socketio.log" 2>&1 &
    ;;
  *) echo "unknown peer $peer" >&2; exit 2 ;;
esac
pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "$pid $port $url"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { echo "$peer exited; see $logdir/$peer.log" >&2; exit 1; }
  sleep 0.1
done
echo "$peer did not listen on $port within 10s" >&2
kill "$pid" 2>/dev/null || true
exit 1
