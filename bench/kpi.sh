#!/usr/bin/env bash
# KPI recomputation cost, side by side with plain SQL in one run:
# UNITS (1000) work units over DAYS (7) days of state data at 1-second
# resolution (recorded on change) and counters read once a minute, on a
# 24/7 three-shift calendar with three 30-minute breaks a day.
#
#   Gantry:    gantry_kpi::report over the embedded history store (every
#              unit's intervals, elements and KPIs for the week)
#   reference: the same elements and figures by one plain SQL query over the
#              same rows in PostgreSQL
#
# Both answers are compared per unit before timing (kpi_bench fails if any
# element differs). Writes bench/results/kpi.md and kpi.jsonl.
# Needs root (or sudo) for scripts/pg-test-env.sh unless GANTRY_BENCH_PG is set.
# Knobs: UNITS, DAYS, RUNS, SKIP_BUILD=1, WORK.
set -euo pipefail
cd "$(dirname "$0")/.."

UNITS=${UNITS:-1000}
DAYS=${DAYS:-7}
RUNS=${RUNS:-3}
WORK=${WORK:-/tmp/gantry-bench-kpi}
BIN="${CARGO_TARGET_DIR:-target}/release/examples/kpi_bench"
OUT=bench/results/kpi.md
RAW=bench/results/kpi.jsonl

if [ "${SKIP_BUILD:-}" != 1 ]; then
    cargo build --release -p gantry-kpi --example kpi_bench >/dev/null
fi
if [ -z "${GANTRY_BENCH_PG:-}" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    pg_env="$($SUDO scripts/pg-test-env.sh)"
    eval "$pg_env"
    export GANTRY_BENCH_PG="$GANTRY_TEST_PG"
fi
mkdir -p "$WORK" bench/results
line=$(taskset -c 0 "$BIN" --units "$UNITS" --days "$DAYS" --runs "$RUNS" --dir "$WORK")
echo "$line" | tee "$RAW"
python3 - "$RAW" "$OUT" "$(nproc)" "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" <<'PY'
import json, sys, time
raw, out, cores, cpu = sys.argv[1:]
d = json.loads(open(raw).read())
o = ["# KPI benchmark", "",
     f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {cores} cores ({cpu}); "
     f"kpi_bench pinned to core 0, PostgreSQL not pinned.", "",
     f"{d['units']:,} work units over {d['days']} days: {d['state_changes']:,} state changes "
     f"(1-second timestamps) and counters once a minute, {d['values_loaded']:,} values in each store.", "",
     "| | ms (median) |", "|---|---:|",
     f"| Gantry: `gantry_kpi::report` over the embedded store | {d['gantry_ms']:,.1f} |",
     f"| PostgreSQL: one plain SQL query over the same rows | {d['postgresql_sql_ms']:,.1f} |",
     f"| speedup | {d['speedup']:.1f}× |", "",
     f"Both computed the same elements for every unit (checked before timing); site OEE {d['site_oee']:.4f}."]
open(out, "w").write("\n".join(o) + "\n")
PY
cat "$OUT"
