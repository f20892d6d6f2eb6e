#!/usr/bin/env bash
# Runs the console's end-to-end tests against the real `gantry demo`.
#   tests/e2e/run.sh                      (build first: cargo build -p gantry)
#   GANTRY_BIN=/path/to/gantry E2E_ARTIFACTS=/tmp/shots tests/e2e/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Install the pinned playwright-core only when node_modules is missing or
# older than the lock file (npm writes node_modules/.package-lock.json).
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json || package.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

# Never let playwright download a browser: the tests use Debian's Chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
status=0
npm test || status=$?
exit "$status"
