# Sourced by run-matrix.sh and connect-cpu.sh: how wsbench's clients speak to each hub,
# and the clients held while others connect. Needs B (the wsbench binary).
# peer_flags PEER sets QS (a query for the URL) and PF (wsbench's client flags); COMMON
# holds the flags every run shares.
# shellcheck shell=bash

# target_dir MANIFEST: cargo's target directory for that Cargo.toml, wherever
# CARGO_TARGET_DIR or cargo's config puts it.
target_dir() {
  cargo metadata --format-version 1 --no-deps --manifest-path "$1" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

peer_flags() {
  QS=''
  case "$1" in
    wxhub)    PF=(--on-open '{"type":"join","name":"u{i}"}' --on-open '{"type":"subscribe","group":"bench"}'
                  --await-reply --publish '{"type":"publish","group":"bench","body":"t={ts}"}') ;;
    # The same hub with clients that only connect, as the ws hub's do (idle tests only:
    # its clients are in no group).
    wxhub-bare) PF=(--publish '{"type":"publish","group":"bench","body":"t={ts}"}') ;;
    # The same hub with clients that join and subscribe in the handshake (one round trip:
    # ready once `subscribed` has arrived), and the same publisher.
    wxhub-url) QS='?name=u{i}&subscribe=bench'
               PF=(--ready-prefix '{"type":"subscribed"' --publish '{"type":"publish","group":"bench","body":"t={ts}"}') ;;
    ws)       PF=(--publish 't={ts}') ;;
    socketio) PF=(--on-open 40 --ready-prefix 40 --reply 2=3 --publish '42["pub","t={ts}"]') ;;
    *) echo "unknown peer $1 (wxhub, wxhub-bare, wxhub-url, ws, socketio)" >&2; return 2 ;;
  esac
}
COMMON=(--threads 1 --source-ips 127.0.0.2-127.0.0.9 --connect-timeout-s 120 --max-s 900)

# start_holders N URL LOG: connects N clients with the peer's flags (after peer_flags) and
# keeps them open, in the background (HOLD_PID); returns once they are all ready, or
# fails after two minutes. The measured clients then take other names (measured_names).
start_holders() {
  "$B" idle --clients "$1" --hold-s 900 --url "$2" "${PF[@]}" "${COMMON[@]}" --label holders >"$3" 2>&1 &
  HOLD_PID=$!
  for _ in $(seq 1 600); do grep -q '^idle:' "$3" && return 0; sleep 0.2; done
  return 1
}

# measured_names ARG...: the arguments with the holders' names u{i} turned into m{i}, as
# {i} restarts at 0 in each wsbench. Prints one argument per line (for mapfile).
measured_names() { printf '%s\n' "${@//u\{i\}/m\{i\}}"; }
