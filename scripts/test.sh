#!/usr/bin/env bash
# Runs every test: unit tests, the HTTP integration suite (tests/api), and
# the end-to-end suite with real software (tests/e2e: official MCP SDK
# clients, Debian's chromium, oidc-provider), and the MCP conformance suite's
# authorization-server scenarios (tests/conformance). Fails when any test
# fails, and when no test ran at all.
#
# First it sets up what the tests need on a fresh machine (Debian or Ubuntu
# with a Rust toolchain and Node.js 20 or later):
#   - system packages: redis-server (tests/api starts its own Redis servers),
#     chromium (the end-to-end suite's browser), openssl (tests/api makes
#     keys with it; the end-to-end suite makes its test CA with it), prometheus (its promtool checks the /metrics output).
#     Missing ones are installed with apt-get when running as
#     root, or with `sudo -n apt-get` when sudo needs no password; otherwise
#     the script stops with one line naming the packages to install. A test
#     is never skipped for want of them.
#   - Node.js 20 or later and npm (installed from apt like the above when
#     missing, then checked: Debian 12's own nodejs is 18, too old).
#   - `npm ci` in tests/mcp-server, tests/e2e and tests/conformance, from
#     their lock files (tests/conformance pins @modelcontextprotocol/conformance
#     and, as an npm package, the Node.js 22 its CLI needs).
#
#   scripts/test.sh              set up, then run everything
#   scripts/test.sh --setup-only set up, run nothing
#   scripts/test.sh --dry-run    say what set-up would install or run; change nothing
set -euo pipefail
cd "$(dirname "$0")/.."

mode=all
case "${1:-}" in
  "") ;;
  --setup-only) mode=setup ;;
  --dry-run) mode=dry-run ;;
  *)
    echo "usage: scripts/test.sh [--setup-only | --dry-run]" >&2
    exit 2
    ;;
esac

say() { echo "== $*"; }
die() {
  echo "scripts/test.sh: $*" >&2
  exit 1
}

# ---------------------------------------------------------------- set-up

# Debian packages whose command is missing from PATH. The browser is looked
# for where the end-to-end suite looks (E2E_CHROMIUM, else chromium on PATH).
missing_packages() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v openssl >/dev/null || missing+=(openssl)
  # promtool checks the /metrics exposition (tests/api/metrics.rs).
  command -v promtool >/dev/null || missing+=(prometheus)
  if [ -n "${E2E_CHROMIUM:-}" ]; then
    [ -x "$E2E_CHROMIUM" ] || missing+=(chromium)
  else
    command -v chromium >/dev/null || missing+=(chromium)
  fi
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  echo "${missing[@]}"
}

# How this process can run apt-get: "root", "sudo", or "" (it cannot).
apt_access() {
  command -v apt-get >/dev/null || return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo root
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    echo sudo
  fi
}

install_packages() {
  local packages=("$@") access
  access=$(apt_access)
  local as_root=()
  case "$access" in
    root) ;;
    sudo) as_root=(sudo -n) ;;
    *)
      die "missing ${packages[*]}: install them first (Debian/Ubuntu: sudo apt-get install -y ${packages[*]}), then run again"
      ;;
  esac
  if [ "$mode" = dry-run ]; then
    say "would install: ${as_root[*]:+${as_root[*]} }apt-get install -y ${packages[*]}"
    return
  fi
  say "installing ${packages[*]} (${access})"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
  local still
  still=$(missing_packages)
  [ -z "$still" ] || die "still missing after apt-get install: $still"
}

check_node() {
  command -v node >/dev/null || return 0 # dry run: it would be installed
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 20 ]; then
    die "Node.js 20 or later is needed, found $(node --version) at $(command -v node): install a newer one (e.g. https://github.com/nodesource/distributions) and run again"
  fi
}

# `npm ci` in $1 when its node_modules is missing or older than its lock file.
npm_ci() {
  local dir=$1
  if [ -d "$dir/node_modules" ] && [ ! "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    say "$dir/node_modules is up to date"
  elif [ "$mode" = dry-run ]; then
    say "would run: (cd $dir && npm ci)"
  else
    say "npm ci in $dir"
    # The end-to-end suite uses the system's chromium, never a download.
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
    touch "$dir/node_modules"
  fi
}

set_up() {
  say "system packages the tests need"
  local missing
  missing=$(missing_packages)
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 # a list of package names
    install_packages $missing
  else
    echo "redis-server, openssl, promtool, chromium, node and npm are installed"
  fi
  check_node
  npm_ci tests/mcp-server
  npm_ci tests/e2e
  npm_ci tests/conformance
  if [ -z "${E2E_CHROMIUM:-}" ] && command -v chromium >/dev/null; then
    E2E_CHROMIUM=$(command -v chromium)
    export E2E_CHROMIUM
  fi
}

set_up
case "$mode" in
  dry-run)
    say "dry run: nothing installed, no test run"
    exit 0
    ;;
  setup)
    say "set-up done"
    exit 0
    ;;
esac

# ---------------------------------------------------------------- tests

log=$(mktemp)
trap 'rm -f "$log"' EXIT
say "Rust tests"
cargo test --lib --bins --tests 2>&1 | tee "$log"
passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
if [ "$passed" -lt 1 ]; then
  echo "no Rust test ran: refusing to pass" >&2
  exit 1
fi

say "end-to-end suite"
tests/e2e/run.sh 2>&1 | tee "$log"
e2e_passed=$(grep -Eo '^e2e: [0-9]+ passed' "$log" | awk '{print $2}')
# Every scenario of tests/e2e/suite.mjs (its SCENARIOS list).
e2e_expected=12
if [ -z "$e2e_passed" ] || [ "$e2e_passed" -lt "$e2e_expected" ]; then
  echo "the end-to-end suite did not run all $e2e_expected scenarios: refusing to pass" >&2
  exit 1
fi

say "MCP conformance suite (authorization server)"
tests/conformance/run.sh 2>&1 | tee "$log"
conformance_passed=$(grep -Eo '^conformance: [0-9]+ passed' "$log" | awk '{print $2}')
# Every authorization-server scenario of the pinned suite (run.mjs's EXPECTED_SCENARIOS).
conformance_expected=2
if [ -z "$conformance_passed" ] || [ "$conformance_passed" -lt "$conformance_expected" ]; then
  echo "the conformance suite did not pass all $conformance_expected scenarios: refusing to pass" >&2
  exit 1
fi
echo "== all tests passed: $passed Rust tests, $e2e_passed end-to-end scenarios, $conformance_passed conformance scenarios"
