#!/usr/bin/env bash
# The whole test suite: Rust unit and end-to-end tests (the load generator's included),
# a smoke run of every benchmark scenario, the Autobahn conformance run, then the
# JavaScript suites that run the demo page in Chromium and the mini-program client
# against a real hub.
#   scripts/test.sh            everything
#   scripts/test.sh rust       only `cargo test`
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
what="${1:-all}"

echo "== cargo test"
cargo test --workspace --all-targets

[[ "$what" == "rust" ]] && exit 0

# The hub and wxhub-bench for the suites below, from the build `cargo test` just made, and
# where cargo put them (CARGO_TARGET_DIR and cargo's config decide, not `target/`). A plain
# `cargo build --bin wxhub` would recompile ~28 crates: without the dev-dependencies their
# features differ (resolver 2). With the test targets in it, this build reuses all of that
# and compiles only wxhub-bench's binary.
echo "== the hub and wxhub-bench, as cargo test built them"
bins="$(cargo build --workspace --all-targets --message-format=json-render-diagnostics | python3 -c '
import json, sys
exe = {}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["bin"] and not m["profile"]["test"]:
        exe[m["target"]["name"]] = m["executable"]
print(exe["wxhub"]); print(exe["wxhub-bench"])')"
{ read -r WXHUB_BIN; read -r WXHUB_BENCH_BIN; } <<<"$bins"
export WXHUB_BIN WXHUB_BENCH_BIN

if [[ ! -x /usr/bin/chromium ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "== installing Debian's chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "the browser test needs /usr/bin/chromium: sudo apt-get install chromium" >&2
    exit 1
  fi
fi

echo "== load generator smoke (bench/smoke.sh)"
bench/smoke.sh

echo "== Autobahn conformance (scripts/autobahn.sh)"
scripts/autobahn.sh "$WXHUB_BIN"

echo "== the server API against its OpenAPI document (scripts/schemathesis.sh)"
scripts/schemathesis.sh "$WXHUB_BIN"

for suite in clients/js tests/browser tests/admin examples/miniprogram/test; do
  if [[ -f "$suite/package.json" ]]; then
    echo "== $suite"
    (cd "$suite" && npm ci --no-audit --no-fund --loglevel=error && npm test)
  fi
done
