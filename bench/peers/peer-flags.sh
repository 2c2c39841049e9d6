# Sourced by run-matrix.sh and connect-cpu.sh: how wsbench's clients speak to each hub.
# peer_flags PEER sets QS (a query for the URL) and PF (wsbench's client flags); COMMON
# holds the flags every run shares.
# shellcheck shell=bash
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
