# Sourced by cluster-fanout.sh and bench/smoke.sh: a redis-server of the run's own on a
# free port, and cluster nodes on it (wxhub with --redis, or socketio-redis-hub.js), each
# started in the background and waited for. Every start_* sets PID (and PORT, URL).
# shellcheck shell=bash

# free_port: a TCP port of 127.0.0.1 free now (the OS's pick; another process could take it
# before it is bound, which the start_* below then report).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND every 0.1 s; fails after SECONDS, or at
# once if the process $PID has exited.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local i
  for i in $(seq 1 $((secs * 10))); do
    if "$@" 2>/dev/null; then return 0; fi
    kill -0 "$PID" 2>/dev/null || { echo "$what exited before it was ready" >&2; return 1; }
    sleep 0.1
  done
  echo "$what not ready within $secs s" >&2
  return 1
}

# http_status PORT PATH: the status code of GET http://127.0.0.1:PORT/PATH (bash only, no
# curl needed).
http_status() {
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  read -r line <&3 || true
  exec 3<&- 3>&-
  line="${line#* }"
  echo "${line%% *}"
}
ready_200() { [ "$(http_status "$1" /readyz)" = 200 ]; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_redis LOG: redis-server on a free port, nothing saved to disk; sets PID, PORT and
# REDIS_URL.
start_redis() {
  local bin="${REDIS_SERVER:-redis-server}"
  command -v "$bin" >/dev/null || { echo "no redis-server (apt-get install redis-server)" >&2; return 1; }
  PORT=$(free_port)
  "$bin" --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no >"$1" 2>&1 &
  PID=$!
  REDIS_URL="redis://127.0.0.1:$PORT/0"
  wait_for "redis-server on $PORT" 10 grep -q 'Ready to accept connections' "$1"
}

# start_wxhub_node BIN NAME REDIS_URL LOG [ARG...]: a wxhub node in cluster mode on a free
# port, with the per-session rate limit lifted (the publisher sends faster than 50/s);
# ready once /readyz answers 200 (it is subscribed on Redis). Sets PID, PORT and URL.
start_wxhub_node() {
  local bin="$1" name="$2" redis="$3" log="$4"; shift 4
  PORT=$(free_port)
  RUST_LOG="${RUST_LOG:-warn}" WXHUB_RATE_LIMIT=1000000 WXHUB_RATE_BURST=1000000 \
    "$bin" --bind "127.0.0.1:$PORT" --redis "$redis" --node-name "$name" "$@" >"$log" 2>&1 &
  PID=$!
  URL="ws://127.0.0.1:$PORT/ws"
  wait_for "wxhub node $name on $PORT" 20 ready_200 "$PORT"
}

# start_socketio_node DIR REDIS_URL LOG: socketio-redis-hub.js (in DIR, next to its
# node_modules) on a free port. Sets PID, PORT and URL.
start_socketio_node() {
  local dir="$1" redis="$2" log="$3"
  PORT=$(free_port)
  node "$dir/socketio-redis-hub.js" "$PORT" "$redis" >"$log" 2>&1 &
  PID=$!
  URL="ws://127.0.0.1:$PORT/socket.io/?EIO=4&transport=websocket"
  wait_for "socket.io node on $PORT" 20 listening "$PORT"
}

# stop PID...: SIGTERM, then wait for each.
stop() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
