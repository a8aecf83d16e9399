#!/usr/bin/env bash
# Runs every test: unit tests, the HTTP integration suite (tests/api), and
# the end-to-end suite with real software (tests/e2e: official MCP SDK
# client, Debian's chromium, oidc-provider). Fails when any test fails, and
# when no test ran at all.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real MCP server used by the gateway tests (official TypeScript SDK).
if [ ! -d tests/mcp-server/node_modules ] || [ tests/mcp-server/package-lock.json -nt tests/mcp-server/node_modules ]; then
  (cd tests/mcp-server && npm ci --no-audit --no-fund)
  touch tests/mcp-server/node_modules
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --lib --bins --tests 2>&1 | tee "$log"
passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
if [ "$passed" -lt 1 ]; then
  echo "no Rust test ran: refusing to pass" >&2
  exit 1
fi

tests/e2e/run.sh 2>&1 | tee "$log"
e2e_passed=$(grep -Eo '^e2e: [0-9]+ passed' "$log" | awk '{print $2}')
if [ -z "$e2e_passed" ] || [ "$e2e_passed" -lt 6 ]; then
  echo "the end-to-end suite did not run all scenarios: refusing to pass" >&2
  exit 1
fi
echo "== all tests passed: $passed Rust tests, $e2e_passed end-to-end scenarios"
