#!/usr/bin/env bash
# RFC 6455 conformance: the Autobahn TestSuite cases, run by kosoku (PyPI), against
#   - /echo (test-only, --echo-route): groups 1-7 and 10, and 9.x up to the 64 KiB
#     message limit (larger 9.x messages close with 1009; tests/e2e_frames.rs checks that);
#   - /ws (the real endpoint): the cases that need no echo: control frames, reserved bits
#     and opcodes, bad fragmentation, invalid UTF-8 (closed with 1007), the close handshake.
# Pass rule: no FAILED case. Prints a summary line per run.
#   scripts/autobahn.sh [path/to/wxhub]    (default: $WXHUB_BIN, else cargo's debug build)
# The runner's venv and the reports go to autobahn/ in cargo's target directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# Cargo's target directory, wherever CARGO_TARGET_DIR or cargo's config puts it.
target="$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="${1:-${WXHUB_BIN:-$target/debug/wxhub}}"
[[ -x "$bin" ]] || { echo "autobahn: no hub binary at $bin (cargo build, or pass its path)" >&2; exit 1; }
work="$target/autobahn"
mkdir -p "$work"

if [[ ! -x "$work/venv/bin/kosoku" ]]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet --disable-pip-version-check kosoku
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn "$bin" --bind "127.0.0.1:$port" --echo-route >"$work/hub.log" 2>&1 &
hub=$!
trap 'kill $hub 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done

# Cases that send no valid data message, so they need no echo.
ws_cases=(
  '2.*' 3.1 3.5 3.6 3.7 4.1.1 4.1.2 4.2.1 4.2.2
  5.1 5.2 5.9 5.10 5.11 5.12 5.13 5.14 5.16 5.17 5.18
  6.3.1 6.3.2 6.4.1 6.4.2 6.4.3 6.4.4 6.6.1 6.6.3 6.6.4 6.6.6 6.6.8 6.6.10 6.8.1 6.8.2
  6.10.1 6.10.2 6.10.3 6.11.5 '6.12.*' '6.13.*' '6.14.*' '6.15.*' '6.16.*' '6.17.*'
  '6.18.*' '6.19.*' '6.20.*' '6.21.*'
  7.1.2 7.1.3 7.1.4 7.1.5 7.1.6 '7.3.*' 7.5.1 '7.7.*' '7.9.*' '7.13.*'
)
echo_cases=('1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' '10.*' 9.1.1 9.2.1 '9.7.*' '9.8.*')

run() { # name path cases...
  local name=$1 path=$2; shift 2
  local args=()
  for c in "$@"; do args+=(-i "$c"); done
  rm -rf "$work/$name"
  "$work/venv/bin/kosoku" "ws://127.0.0.1:$port$path" "${args[@]}" -p 2 -o "$work/$name" >"$work/$name.log" 2>&1 || true
  python3 - "$work/$name/index.json" "$name" <<'PY'
import collections, json, sys
cases = next(iter(json.load(open(sys.argv[1])).values()))
count = collections.Counter(v["behavior"] for v in cases.values())
failed = sorted(k for k, v in cases.items() if v["behavior"] == "FAILED")
print(f"autobahn {sys.argv[2]}: {len(cases)} cases, " + ", ".join(f"{n} {b}" for b, n in sorted(count.items())))
if failed:
    print("  FAILED: " + " ".join(failed))
    sys.exit(1)
PY
}

status=0
run echo /echo "${echo_cases[@]}" || status=1
run ws /ws "${ws_cases[@]}" || status=1
exit $status
