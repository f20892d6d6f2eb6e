#!/usr/bin/env bash
# Runs Gantry's whole test suite: unit and integration tests (cargo), then the
# interop suite against independent peers (mosquitto clients, paho-mqtt,
# pymodbus, asyncua) and the historian's PostgreSQL tests against a local
# PostgreSQL server, then the console's end-to-end tests in headless Chromium.
# Installs the peers it needs when they are missing (Debian + pip).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
[ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
# The historian's PostgreSQL tests need a real server.
if ! command -v pg_lsclusters >/dev/null 2>&1 || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
  need_apt+=(postgresql)
fi
# The console's end-to-end tests run in Debian's Chromium (Node.js and npm
# are on the machine; playwright-core comes from tests/e2e/package-lock.json).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c 'import paho.mqtt, pytest, pymodbus, asyncua' 2>/dev/null || {
  echo "test.sh: installing paho-mqtt, pytest, pymodbus and asyncua"
  python3 -m pip install -q "paho-mqtt==2.1.0" "pytest==8.3.5" "pymodbus==3.16.1" "asyncua==2.1.0"
}

# PostgreSQL for the historian's PostgreSQL tests, when it is installed and
# the caller (e.g. .ci/run) has not set one up already. pg-test-env.sh needs
# root; without it (or if it fails) those tests say SKIPPED and pass, unless
# GANTRY_REQUIRE_PG=1 was set by the caller.
if [ -z "${GANTRY_TEST_PG:-}" ] && command -v pg_lsclusters >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if pg_env="$($SUDO ./scripts/pg-test-env.sh)"; then
    eval "$pg_env"
  else
    echo "test.sh: no PostgreSQL test server (see above): the PostgreSQL tests will be skipped" >&2
  fi
fi

cargo build --workspace --all-targets
cargo test --workspace
GANTRY_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/gantry" python3 -m pytest tests/interop -q
# The console in a real browser: log in, tree, live values, trend, OEE
# drill-down, dead letters; screenshots go to $E2E_ARTIFACTS.
GANTRY_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/gantry" ./tests/e2e/run.sh
