#!/usr/bin/env bash
# Runs the end-to-end suite: the official MCP SDK client and a real browser
# (Debian's chromium) against mcp-oauth-proxy, with oidc-provider upstream and
# an official-SDK MCP server behind it, all on 127.0.0.1.
#
#   tests/e2e/run.sh            (from anywhere)
#
# Builds the proxy (release), installs the pinned npm packages when needed,
# never downloads a browser. Exits non-zero on any FAIL, or when the suite
# takes longer than E2E_TIMEOUT seconds (default 900).
#
# Environment: E2E_PROXY_BIN (use this binary, skip the build), E2E_CHROMIUM
# (default /usr/bin/chromium), E2E_ARTIFACTS (default tests/e2e/artifacts),
# E2E_ONLY (e.g. "1,3": run only these scenarios), E2E_TIMEOUT.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CHROMIUM="${E2E_CHROMIUM:-/usr/bin/chromium}"
TIMEOUT="${E2E_TIMEOUT:-900}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

echo "== e2e: browser"
if [ ! -x "$CHROMIUM" ]; then
  echo "e2e: no browser at $CHROMIUM." >&2
  echo "e2e: install Debian's chromium first:  apt-get install -y chromium" >&2
  echo "e2e: (this suite never downloads a browser)" >&2
  exit 2
fi
echo "$CHROMIUM"

echo "== e2e: node"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "e2e: node and npm are required (apt-get install -y nodejs npm)" >&2
  exit 2
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "e2e: Node.js >= 20 is required, found $(node --version)" >&2
  exit 2
fi
node --version

echo "== e2e: proxy binary"
if [ -n "${E2E_PROXY_BIN:-}" ]; then
  echo "using $E2E_PROXY_BIN"
else
  (cd "$REPO" && cargo build --release --bin mcp-oauth-proxy)
  export E2E_PROXY_BIN="$REPO/target/release/mcp-oauth-proxy"
fi

echo "== e2e: npm packages (from package-lock.json)"
if [ ! -d "$HERE/node_modules" ] || [ "$HERE/package-lock.json" -nt "$HERE/node_modules" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund)
  touch "$HERE/node_modules"
else
  echo "node_modules is up to date"
fi

echo "== e2e: suite"
rc=0
(cd "$HERE" && timeout --kill-after=15 "$TIMEOUT" node suite.mjs) || rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "FAIL e2e: the suite did not finish within $TIMEOUT s"
fi
if [ "$rc" -ne 0 ]; then
  echo "e2e: FAILED (exit $rc); screenshots and proxy logs in ${E2E_ARTIFACTS:-$HERE/artifacts}" >&2
fi
exit "$rc"
