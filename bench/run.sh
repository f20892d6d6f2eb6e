#!/usr/bin/env bash
# Side-by-side benchmark: the same load against Gantry and Mosquitto, in one run.
#
# The broker under test is pinned to one core and the load generator to the other
# (taskset); every scenario runs RUNS times and the table shows medians and the
# ratio Gantry/Mosquitto. Writes bench/results/latest.md (table) and
# bench/results/latest.jsonl (every result line). See bench/README.md.
#
# Knobs (environment): BROKERS RUNS DURATION LAT_DURATION LAT_SAMPLES RATES_QOS0 RATES_QOS1
# IDLE_CONNS RETAINED FANIN_PUBS FANOUT_SUBS MQTT_VERSION BROKER_CPU LOADGEN_CPU
# NICE (e.g. -10: run broker and load generator at a higher priority than other
# work on a shared machine; needs root) SKIP_BUILD=1.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1

BROKERS=${BROKERS:-"gantry mosquitto"}
RUNS=${RUNS:-3}
DURATION=${DURATION:-4}          # seconds of publishing per throughput run
LAT_DURATION=${LAT_DURATION:-3}  # seconds per fixed-rate latency run, at least...
LAT_SAMPLES=${LAT_SAMPLES:-10000} # ...long enough for this many messages (stable p99)
RATES_QOS0=${RATES_QOS0:-"1000 10000 50000"}
RATES_QOS1=${RATES_QOS1:-"1000 10000 25000"}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_HOLD=${IDLE_HOLD:-5}
RETAINED=${RETAINED:-100000}
FANIN_PUBS=${FANIN_PUBS:-10}
FANOUT_SUBS=${FANOUT_SUBS:-10}
MQTT_VERSION=${MQTT_VERSION:-4}
BROKER_CPU=${BROKER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
NICE=${NICE:-}

GANTRY_BIN=target/release/gantry
GANTRY_CONF=bench/gantry-bench.toml
GANTRY_PORT=18830
GANTRY_DATA=/tmp/gantry-bench-data
MOSQUITTO_BIN=${MOSQUITTO_BIN:-/usr/sbin/mosquitto}
MOSQ_CONF=bench/mosquitto-bench.conf
MOSQ_PERSIST_CONF=bench/mosquitto-bench-persist.conf
MOSQ_PORT=18831
MOSQ_PERSIST_DIR=/tmp/gantry-bench-mosquitto
LG=target/release/gantry-loadgen

OUT=bench/results
RAW=$OUT/latest.jsonl
LOGS=/tmp/gantry-bench-logs
mkdir -p "$OUT" "$LOGS"
: >"$RAW"
NOTES=()
BROKER_PID=""
PORT=""
START_ERR=""

# pin CPU COMMAND... : execs COMMAND pinned to one core (reniced when NICE is
# set). Call it only in a subshell, `pin ... &` or `$(pin ...)`, so that $! is
# the command's own pid.
pin() {
    local cpu=$1
    shift
    if [[ -n $NICE ]]; then
        exec nice -n "$NICE" taskset -c "$cpu" "$@"
    else
        exec taskset -c "$cpu" "$@"
    fi
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
note() { NOTES+=("$*"); log "NOTE: $*"; }

stop_broker() { # [signal]
    local sig=${1:-TERM} pid=$BROKER_PID
    [[ -n $pid ]] || return 0
    BROKER_PID=""
    kill -s "$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "broker $pid ignored SIG$sig for 10 s; killing it"
        kill -9 "$pid" 2>/dev/null || true
    fi
    { wait "$pid"; } 2>/dev/null || true # (also hides bash's "Killed" job report)
}
trap 'stop_broker KILL' EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_broker NAME mem|persist wipe|keep [nowait] -> sets BROKER_PID and PORT,
# or START_ERR and returns 1
start_broker() {
    local name=$1 variant=$2 wipe=$3 nowait=${4:-}
    case $name in
    gantry)
        PORT=$GANTRY_PORT
        if [[ ! -x $GANTRY_BIN ]]; then
            START_ERR="$GANTRY_BIN is missing (did 'cargo build --release -p gantry' fail?)"
            return 1
        fi
        [[ $wipe == wipe ]] && rm -rf "$GANTRY_DATA"
        ;;
    mosquitto)
        PORT=$MOSQ_PORT
        if [[ ! -x $MOSQUITTO_BIN ]]; then
            START_ERR="$MOSQUITTO_BIN is missing (apt-get install mosquitto)"
            return 1
        fi
        if [[ $wipe == wipe ]]; then
            rm -rf "$MOSQ_PERSIST_DIR"
            mkdir -p "$MOSQ_PERSIST_DIR"
            chmod 777 "$MOSQ_PERSIST_DIR" # Mosquitto drops root to user mosquitto
        fi
        ;;
    esac
    if port_open "$PORT"; then
        START_ERR="port $PORT is already in use: stop whatever listens there first"
        return 1
    fi
    if [[ $name == gantry ]]; then
        pin "$BROKER_CPU" "$GANTRY_BIN" run --config "$GANTRY_CONF" >>"$LOGS/gantry.log" 2>&1 &
    else
        local conf=$MOSQ_CONF
        [[ $variant == persist ]] && conf=$MOSQ_PERSIST_CONF
        pin "$BROKER_CPU" "$MOSQUITTO_BIN" -c "$conf" >>"$LOGS/mosquitto.log" 2>&1 &
    fi
    BROKER_PID=$!
    [[ -n $nowait ]] && return 0
    for _ in $(seq 750); do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            wait "$BROKER_PID" 2>/dev/null
            local rc=$?
            BROKER_PID=""
            START_ERR="$name exited right after starting (status $rc); see $LOGS/$name.log"
            return 1
        fi
        port_open "$PORT" && return 0
        sleep 0.02
    done
    stop_broker KILL
    START_ERR="$name did not accept connections on port $PORT within 15 s; see $LOGS/$name.log"
    return 1
}

rss_of() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status" 2>/dev/null || echo 0; }

show() { # one result line -> short progress line
    if command -v jq >/dev/null; then
        jq -r '[.label] + [.headline[] as $h | "\($h)=\(.[$h])"] + (.warnings | map("WARN: " + .)) | join("  ")' <<<"$1" 2>/dev/null || echo "$1"
    else
        echo "$1"
    fi
}

# lg BROKER SUBCOMMAND ARGS... : runs the load generator pinned, keeps its JSON line
lg() {
    local broker=$1
    shift
    local line rc
    line=$(pin "$LOADGEN_CPU" "$LG" "$@" --host 127.0.0.1 --port "$PORT" \
        --version "$MQTT_VERSION" --broker "$broker" --json 2>>"$LOGS/loadgen.log")
    rc=$?
    line=$(grep '^{' <<<"$line" | tail -n 1)
    if [[ -n $line ]]; then
        echo "$line" >>"$RAW"
        log "  $broker: $(show "$line")"
    fi
    if ((rc != 0)); then
        local what
        case $rc in
        3) what="QoS 1 messages lost (or none delivered)" ;;
        4) what="idle connections dropped by the broker" ;;
        5) what="retained messages missing" ;;
        *) what="failed: $(tail -n 1 "$LOGS/loadgen.log")" ;;
        esac
        note "$broker: 'gantry-loadgen $1 ${*:2}': $what (status $rc)"
    fi
    return 0
}

emit() { # BROKER LABEL METRIC VALUE : a result line made by this script
    printf '{"label":"%s","broker":"%s","%s":%s,"headline":["%s"],"warnings":[]}\n' \
        "$2" "$1" "$3" "$4" "$3" >>"$RAW"
    log "  $1: $2  $3=$4"
}

lat_secs() { # RATE -> seconds for a latency run
    local need=$(((LAT_SAMPLES + $1 - 1) / $1))
    echo $((need > LAT_DURATION ? need : LAT_DURATION))
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# --- preparation -------------------------------------------------------------
if [[ -z ${SKIP_BUILD:-} ]]; then
    log "building release binaries"
    if ! cargo build --release -p gantry -p gantry-loadgen >"$LOGS/build.log" 2>&1; then
        note "building gantry failed (see $LOGS/build.log); building the load generator alone"
        cargo build --release -p gantry-loadgen >>"$LOGS/build.log" 2>&1 || {
            log "cannot build gantry-loadgen; see $LOGS/build.log"
            exit 1
        }
    fi
fi
[[ -x $LG ]] || { log "$LG is missing"; exit 1; }

cores=$(nproc)
if ((cores < 2)); then
    note "only $cores core: broker and load generator share core 0"
    BROKER_CPU=0 LOADGEN_CPU=0
fi
want_fds=$((IDLE_CONNS + 200))
ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < want_fds)); then
    IDLE_CONNS=$(($(ulimit -n) - 200))
    note "open-files limit is $(ulimit -n): idle test reduced to $IDLE_CONNS connections"
fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date +%s)
log "load average before the run: $load_before"

# --- scenarios ---------------------------------------------------------------
run_broker() {
    local b=$1
    log "=== $b ==="
    # Fail fast and clearly when the broker cannot start at all.
    if ! start_broker "$b" mem wipe; then
        note "$b: not measured: $START_ERR"
        return
    fi
    stop_broker TERM

    log "$b: idle memory and $IDLE_CONNS idle connections (fresh broker per run)"
    for run in $(seq "$RUNS"); do
        start_broker "$b" mem wipe || { note "$b: $START_ERR"; return; }
        sleep 1
        emit "$b" "memory" "rss_idle_bytes" "$(rss_of "$BROKER_PID")"
        lg "$b" idle --connections "$IDLE_CONNS" --hold "$IDLE_HOLD" --keep-alive 600 \
            --pid "$BROKER_PID" --label "idle-$IDLE_CONNS"
        stop_broker TERM
    done

    log "$b: throughput, flat out (closed loop), $RUNS x ${DURATION}s per scenario"
    start_broker "$b" mem wipe || { note "$b: $START_ERR"; return; }
    for run in $(seq "$RUNS"); do
        for q in 0 1; do
            lg "$b" p2p --qos "$q" --duration "$DURATION" --pid "$BROKER_PID" --label "p2p-qos$q"
            lg "$b" fan-in --qos "$q" --publishers "$FANIN_PUBS" --duration "$DURATION" \
                --pid "$BROKER_PID" --label "fan-in-$FANIN_PUBS-qos$q"
            lg "$b" fan-out --qos "$q" --subscribers "$FANOUT_SUBS" --duration "$DURATION" \
                --pid "$BROKER_PID" --label "fan-out-$FANOUT_SUBS-qos$q"
        done
    done

    log "$b: latency at fixed loads, $RUNS runs of >= ${LAT_DURATION}s and >= $LAT_SAMPLES messages per rate"
    for run in $(seq "$RUNS"); do
        for q in 0 1; do
            local rates=$RATES_QOS0
            ((q == 1)) && rates=$RATES_QOS1
            for r in $rates; do
                lg "$b" p2p --qos "$q" --rate "$r" --duration "$(lat_secs "$r")" \
                    --pid "$BROKER_PID" --label "p2p-qos$q-at-$r/s"
            done
        done
    done
    stop_broker TERM

    log "$b: memory for $RETAINED retained topics (fresh broker per run)"
    for run in $(seq "$RUNS"); do
        start_broker "$b" mem wipe || { note "$b: $START_ERR"; return; }
        sleep 1
        lg "$b" retained --topics "$RETAINED" --pid "$BROKER_PID" --label "retained-$RETAINED"
        stop_broker TERM
    done

    log "$b: restart holding $RETAINED retained topics"
    for run in $(seq "$RUNS"); do
        start_broker "$b" persist wipe || { note "$b: $START_ERR"; return; }
        lg "$b" retained --phase publish --topics "$RETAINED" --label "restart-publish"
        sleep 1
        if [[ $b == gantry ]]; then
            stop_broker KILL # crash: Gantry must not depend on a clean shutdown
        else
            stop_broker TERM # Mosquitto writes its persistence file on SIGTERM
        fi
        local t0 t1 line
        t0=$(now_ms)
        start_broker "$b" persist keep nowait || { note "$b: $START_ERR"; return; }
        line=$(pin "$LOADGEN_CPU" "$LG" retained --phase verify --topics "$RETAINED" \
            --wait-ready 60 --host 127.0.0.1 --port "$PORT" --version "$MQTT_VERSION" \
            --broker "$b" --label "restart-$RETAINED" --json 2>>"$LOGS/loadgen.log")
        local rc=$?
        t1=$(now_ms)
        line=$(grep '^{' <<<"$line" | tail -n 1)
        [[ -n $line ]] && echo "$line" >>"$RAW"
        if ((rc == 0)); then
            emit "$b" "restart-$RETAINED" "restart_ms" "$((t1 - t0))"
        else
            note "$b: restart run $run: not all $RETAINED retained messages came back (status $rc): $(show "$line")"
        fi
        stop_broker TERM
    done
    if [[ $b == mosquitto ]]; then
        local drops
        drops=$(grep -c "Outgoing messages are being dropped" "$LOGS/mosquitto.log" || true)
        ((drops > 0)) && note "mosquitto logged 'Outgoing messages are being dropped' $drops time(s) (see $LOGS/mosquitto.log)"
    fi
}

: >"$LOGS/gantry.log"
: >"$LOGS/mosquitto.log"
: >"$LOGS/loadgen.log"
for b in $BROKERS; do
    run_broker "$b"
done

# --- report ------------------------------------------------------------------
elapsed=$(($(date +%s) - started))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
table=$("$LG" report "$RAW" --targets bench/targets.json --title "Gantry vs Mosquitto" 2>&1)
mosq_version=$("$MOSQUITTO_BIN" -h 2>/dev/null | head -n 1)
{
    echo "# Benchmark results"
    echo
    echo "Run on $(date -u +'%Y-%m-%d %H:%M UTC'): $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), Linux $(uname -r);"
    echo "broker pinned to core $BROKER_CPU, load generator to core $LOADGEN_CPU (taskset); $RUNS runs per cell;"
    echo "MQTT protocol level $MQTT_VERSION; load average $load_before before, $load_after after; took ${elapsed}s."
    echo
    echo "$table"
    echo
    echo "### Limits and settings"
    echo
    echo "- Mosquitto: $mosq_version, \`$MOSQ_CONF\`: persistence off, \`set_tcp_nodelay true\`,"
    echo "  \`max_queued_messages 1000\`, \`max_inflight_messages 20\` (its defaults, written out);"
    echo "  restart test with \`$MOSQ_PERSIST_CONF\` (persistence on, stopped with SIGTERM so it saves)."
    echo "- Gantry: \`$GANTRY_CONF\` (data dir wiped before each fresh start), its built-in queue and"
    echo "  in-flight defaults; restart test stops it with SIGKILL (no clean shutdown)."
    echo "- Load generator: one connection per publisher/subscriber, QoS 1 window 100 per publisher"
    echo "  (capped by a 5.0 broker's Receive Maximum), at most 1000 messages sent but not yet"
    echo "  delivered (closed loop, so flat-out runs measure sustained rather than buffered"
    echo "  throughput), 64-byte payloads, ${DURATION}s per throughput run; latency runs last"
    echo "  ${LAT_DURATION}s or long enough for $LAT_SAMPLES messages, whichever is longer."
    echo "- broker_cpu_pct is the broker's CPU time over the run's wall time (100 % = its one core"
    echo "  saturated). A flat-out row where it stays well below 100 % is limited by the load"
    echo "  generator's closed loop (window, outstanding budget), so that broker's figure is a lower bound."
    echo "- Latency is receive time minus the send timestamp in the payload (same clock); fixed-rate"
    echo "  rows are below saturation for both brokers when the rates are chosen well."
    echo "- Memory is the broker's VmRSS: idle after start; growth per idle connection over"
    echo "  $IDLE_CONNS connections; growth for $RETAINED retained topics (~43-byte topics, ~40-byte JSON)."
    echo "- Restart: from starting the broker on a data dir holding $RETAINED retained topics until a"
    echo "  \`#\` subscriber has received all of them."
    if ((${#NOTES[@]} > 0)); then
        echo
        echo "### Notes from this run"
        echo
        printf '%s\n' "${NOTES[@]}" | awk '{ n[$0]++; if (n[$0] == 1) order[++k] = $0 }
            END { for (i = 1; i <= k; i++) print "- " order[i] (n[order[i]] > 1 ? " (" n[order[i]] " times)" : "") }' 
    fi
} >"$OUT/latest.md"
cat "$OUT/latest.md"
log "wrote $OUT/latest.md and $RAW in ${elapsed}s"
