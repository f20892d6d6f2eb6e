#!/usr/bin/env bash
# Console and API: browse latency and live-feed cost with 100,000 tags,
# against what an MQTT client subscribed to `#` pays on the same namespace.
#
# One Gantry (MQTT + HTTP API) and one Mosquitto (the second reference) run
# side by side, pinned to core 0; bench/console/driver.py (Python, standard
# library only) fills both with the same 100,000 retained tags
# (acme/dallas/packaging/line-LL/machine-MM/tag-TTTT: 10 lines x 10 machines
# x 1,000 tags) and drives everything else from core 1. Every round:
#
#  1. an update stream (RATE retained updates/s, QoS 0, tags drawn at random
#     over the whole namespace) runs against Gantry;
#  2. browse and search latency over one keep-alive HTTP connection: a line
#     (10 children), a machine (1,000 children, every page of PAGE), a search
#     matching 100 tags; N requests each, p50/p99;
#  3. "opening the tree" over MQTT: a `#` subscriber, timed until all 100,000
#     retained messages have arrived;
#  4. live-feed cost over WINDOW s each, alternating: no client (baseline),
#     a live feed on one line, an MQTT subscription to the same line, an MQTT
#     `#` subscriber, a live feed on the whole enterprise; the client's
#     bytes/s and events/s, Gantry's CPU time from /proc (the whole process,
#     and without its store writer thread, whose periodic compaction is noise
#     common to every case);
#  5. the stream moves to Mosquitto, and the same `#` subscriber is timed there.
#
# RUNS (5) rounds; the report shows medians. Writes bench/results/console.md
# and the raw lines to bench/results/console.jsonl.
#
# Knobs: RUNS, RATE (5000), N (200), PAGE (200), WINDOW (8), TAGS (1000 tags
# per machine: 100,000 in all), MQTT_PORT (18860), MOSQ_PORT (18861),
# HTTP_PORT (18862), SKIP_BUILD=1, WORK, OUT, RAW. Needs taskset, python3, ss and
# /usr/sbin/mosquitto (set NO_MOSQUITTO=1 to skip that reference).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

RUNS=${RUNS:-5}
RATE=${RATE:-5000}
N=${N:-200}
PAGE=${PAGE:-200}
WINDOW=${WINDOW:-8}
TAGS=${TAGS:-1000}
MQTT_PORT=${MQTT_PORT:-18860}
MOSQ_PORT=${MOSQ_PORT:-18861}
HTTP_PORT=${HTTP_PORT:-18862}
NO_MOSQUITTO=${NO_MOSQUITTO:-}
WORK=${WORK:-/tmp/gantry-bench-console}
BIN="${CARGO_TARGET_DIR:-target}/release"
G=$BIN/gantry
MOSQUITTO=${MOSQUITTO_BIN:-/usr/sbin/mosquitto}
DRIVER=bench/console/driver.py
OUT=${OUT:-bench/results/console.md}
RAW=${RAW:-bench/results/console.jsonl}
USER_NAME=bench
PASSWORD=bench-password-1

die() { echo "console.sh: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
for tool in taskset python3 ss; do command -v "$tool" >/dev/null || die "$tool not found"; done
[ -n "$NO_MOSQUITTO" ] || [ -x "$MOSQUITTO" ] || die "$MOSQUITTO not found (or set NO_MOSQUITTO=1)"

# Never talk to somebody else's broker: every port must be free.
for port in "$MQTT_PORT" "$HTTP_PORT" $([ -n "$NO_MOSQUITTO" ] || echo "$MOSQ_PORT"); do
    ss -Htln "sport = :$port" | grep -q . && die "port $port is in use; choose others (MQTT_PORT, MOSQ_PORT, HTTP_PORT)"
done

if [ "${SKIP_BUILD:-}" != 1 ]; then
    cargo build --release -p gantry >/dev/null || die "build failed"
fi
[ -x "$G" ] || die "$G missing (build it, or unset SKIP_BUILD)"

rm -rf "$WORK"
mkdir -p "$WORK/gantry" "$WORK/mosquitto" bench/results
: >"$RAW"

cat >"$WORK/gantry/gantry.toml" <<CONF
data_dir = "$WORK/gantry/data"
[mqtt]
bind = "127.0.0.1:$MQTT_PORT"
[auth]
allow_anonymous = true
[contracts]
# No plant model: every topic is unmodeled, and routed.
unmodeled = "allow"
# With no model the historian would record nothing; its cost is bench/historian.sh's.
[historian]
enabled = false
[console]
bind = "127.0.0.1:$HTTP_PORT"
CONF
sed "s/^listener .*/listener $MOSQ_PORT 127.0.0.1/" bench/mosquitto-bench.conf >"$WORK/mosquitto/mosquitto.conf"

printf '%s\n' "$PASSWORD" | "$G" user add "$USER_NAME" --role admin --password-stdin \
    --data-dir "$WORK/gantry/data" >/dev/null || die "gantry user add failed"

GANTRY_PID="" MOSQ_PID="" STREAM_PID=""
cleanup() {
    for pid in $STREAM_PID $GANTRY_PID $MOSQ_PID; do kill "$pid" 2>/dev/null; done
    for pid in $STREAM_PID $GANTRY_PID $MOSQ_PID; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    done
    wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # $1 = port, $2 = pid, $3 = log
    for _ in $(seq 150); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    die "nothing listens on port $1; see $3"
}

GANTRY_LOG=warn taskset -c 0 "$G" run --config "$WORK/gantry/gantry.toml" >"$WORK/gantry/gantry.log" 2>&1 &
GANTRY_PID=$!
wait_port "$MQTT_PORT" "$GANTRY_PID" "$WORK/gantry/gantry.log"
wait_port "$HTTP_PORT" "$GANTRY_PID" "$WORK/gantry/gantry.log"
if [ -z "$NO_MOSQUITTO" ]; then
    taskset -c 0 "$MOSQUITTO" -c "$WORK/mosquitto/mosquitto.conf" >"$WORK/mosquitto/mosquitto.log" 2>&1 &
    MOSQ_PID=$!
    wait_port "$MOSQ_PORT" "$MOSQ_PID" "$WORK/mosquitto/mosquitto.log"
fi

drv() { taskset -c 1 python3 "$DRIVER" "$@" --tags "$TAGS" | tee -a "$RAW"; }
run_or_die() { "$@" || die "failed: $*"; }

log "filling 100,000 retained tags (x TAGS/1000)"
run_or_die drv fill --port "$MQTT_PORT" --broker gantry
[ -n "$NO_MOSQUITTO" ] || run_or_die drv fill --port "$MOSQ_PORT" --broker mosquitto

start_stream() { # $1 = port, $2 = broker name, $3 = seed
    taskset -c 1 python3 "$DRIVER" stream --port "$1" --broker "$2" --seed "$3" --rate "$RATE" \
        --tags "$TAGS" --duration 1800 >>"$RAW" &
    STREAM_PID=$!
    sleep 3
    kill -0 "$STREAM_PID" 2>/dev/null || die "the update stream did not start"
}
stop_stream() {
    kill "$STREAM_PID" 2>/dev/null
    wait "$STREAM_PID" 2>/dev/null
    STREAM_PID=""
}

for run in $(seq "$RUNS"); do
    log "round $run of $RUNS: Gantry with $RATE updates/s"
    start_stream "$MQTT_PORT" gantry "$run"
    run_or_die drv browse --http "$HTTP_PORT" --user "$USER_NAME" --password "$PASSWORD" \
        --n "$N" --page "$PAGE" --seed "$run"
    run_or_die drv tree --port "$MQTT_PORT" --broker gantry --http "$HTTP_PORT" --user "$USER_NAME" --password "$PASSWORD"
    run_or_die drv live --port "$MQTT_PORT" --http "$HTTP_PORT" --user "$USER_NAME" \
        --password "$PASSWORD" --pid "$GANTRY_PID" --window "$WINDOW"
    stop_stream
    if [ -z "$NO_MOSQUITTO" ]; then
        log "round $run of $RUNS: Mosquitto with $RATE updates/s"
        start_stream "$MOSQ_PORT" mosquitto "$run"
        run_or_die drv tree --port "$MOSQ_PORT" --broker mosquitto
        stop_stream
    fi
done

python3 "$DRIVER" report "$RAW" --output "$WORK/report.md" \
    --title "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $RUNS rounds, $RATE updates/s" >/dev/null \
    || die "report failed"
cp "$WORK/report.md" "$OUT"
cat "$OUT"
