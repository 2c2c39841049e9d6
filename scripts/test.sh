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

echo "== building the hub for the JavaScript suites"
cargo build --bin wxhub
export WXHUB_BIN="$root/target/debug/wxhub"

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
WXHUB_BIN="$WXHUB_BIN" bench/smoke.sh

echo "== Autobahn conformance (scripts/autobahn.sh)"
scripts/autobahn.sh "$WXHUB_BIN"

for suite in tests/browser examples/miniprogram/test; do
  if [[ -f "$suite/package.json" ]]; then
    echo "== $suite"
    (cd "$suite" && npm ci --no-audit --no-fund --loglevel=error && npm test)
  fi
done
