#!/usr/bin/env bash
# The server API against its own OpenAPI document: schemathesis (PyPI) generates requests
# from /api/openapi.json (valid and invalid bodies, queries, paths, methods, no key) and
# checks every answer: no 5xx, status codes, content types, headers and bodies as the
# document says, auth enforced. Bounded: 100 examples per operation and phase.
#   scripts/schemathesis.sh [path/to/wxhub]    (default: $WXHUB_BIN, else cargo's debug build)
# The runner's venv goes to schemathesis/ in cargo's target directory.
#
# One worker: hypothesis in threads trips a CPython 3.11 bug (ast.parse "recursion depth
# mismatch") that has nothing to do with the API.
#
# Not checked: that every request the document allows is accepted, and every one it
# forbids refused (positive_data_acceptance, negative_data_rejection). User names follow
# Unicode rules (docs/PROTOCOL.md, "join") that a JSON Schema cannot state, so the
# document gives their length only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="${1:-${WXHUB_BIN:-$target/debug/wxhub}}"
[[ -x "$bin" ]] || { echo "schemathesis: no hub binary at $bin (cargo build, or pass its path)" >&2; exit 1; }
work="$target/schemathesis"
mkdir -p "$work"
version=4.32.5
if [[ ! -x "$work/venv/bin/schemathesis" ]] || ! "$work/venv/bin/schemathesis" --version | grep -q "$version"; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

key="schemathesis-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn WXHUB_API_KEY="$key" "$bin" --bind "127.0.0.1:$port" >"$work/hub.log" 2>&1 &
hub=$!
trap 'kill $hub 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done

cd "$work"
"$work/venv/bin/schemathesis" run "http://127.0.0.1:$port/api/openapi.json" \
  --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer $key" \
  --checks all --exclude-checks positive_data_acceptance,negative_data_rejection \
  --max-examples 100 --seed 1 --workers 1 >"$work/run.log" 2>&1 || {
  tail -60 "$work/run.log"
  echo "schemathesis: FAILED (full log: $work/run.log)" >&2
  exit 1
}
grep -E "test cases|passed|failures" "$work/run.log" | tail -3 | sed 's/^/schemathesis: /'
# The hub must still be alive and answering after all of it.
python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/healthz', timeout=5)" \
  || { echo "schemathesis: the hub died" >&2; exit 1; }
