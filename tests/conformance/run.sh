#!/usr/bin/env bash
# Runs the MCP conformance suite's authorization-server scenarios
# (@modelcontextprotocol/conformance, pinned in package.json) against
# mcp-oauth-proxy, which run.mjs starts itself on 127.0.0.1 with the
# end-to-end suite's upstream (oidc-provider) and browser (Debian's chromium).
#
#   tests/conformance/run.sh
#
# Builds the proxy (release) unless E2E_PROXY_BIN names a binary, installs the
# pinned npm packages here and in tests/e2e when needed, and fails on any
# failed or warning check, on a scenario that did not run, or after
# CONFORMANCE_TIMEOUT seconds (default 300).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TIMEOUT="${CONFORMANCE_TIMEOUT:-300}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "conformance: node and npm are required" >&2
  exit 2
fi

if [ -n "${E2E_PROXY_BIN:-}" ]; then
  echo "== conformance: using $E2E_PROXY_BIN"
else
  (cd "$REPO" && cargo build --release --bin mcp-oauth-proxy)
  export E2E_PROXY_BIN="$REPO/target/release/mcp-oauth-proxy"
fi

for dir in "$HERE" "$REPO/tests/e2e"; do
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund)
    touch "$dir/node_modules"
  fi
done

rc=0
(cd "$HERE" && timeout --kill-after=15 "$TIMEOUT" node run.mjs) || rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "FAIL conformance: did not finish within $TIMEOUT s"
fi
exit "$rc"
