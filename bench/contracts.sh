#!/usr/bin/env bash
# Cost of data contracts: the same load against Gantry with contract enforcement
# on and off, in one run. Every message is a JSON time-series sample on a
# modeled tag, so with contracts on each one is parsed, type-checked and
# re-serialised in canonical form before routing.
#
# Broker pinned to core 0, load generator to core 1; RUNS (3) runs per cell;
# medians and the ratio on/off. Writes bench/results/contracts.md.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

RUNS=${RUNS:-3}
DURATION=${DURATION:-4}
PORT=18830
TOPIC=bench/lab/load/line-1/probe/value
G=target/release/gantry
LG=target/release/gantry-loadgen
WORK=/tmp/gantry-bench-contracts
OUT=bench/results/contracts.md
[ "${SKIP_BUILD:-}" = 1 ] || cargo build --release -p gantry -p gantry-loadgen >/dev/null || exit 1
mkdir -p "$WORK" bench/results

config() { # $1 = true|false
    cat >"$WORK/gantry.toml" <<CONF
data_dir = "$WORK/data"
model = "$PWD/bench/contracts-model.toml"
[mqtt]
bind = "127.0.0.1:$PORT"
[auth]
allow_anonymous = true
[contracts]
enabled = $1
unmodeled = "allow"
CONF
}

start() {
    rm -rf "$WORK/data"
    GANTRY_LOG=warn taskset -c 0 "$G" run --config "$WORK/gantry.toml" >"$WORK/gantry.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0
        sleep 0.1
    done
    echo "gantry did not start; see $WORK/gantry.log" >&2
    exit 1
}

stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A RESULT
for mode in true false; do
    config "$mode"
    start
    for qos in 0 1; do
        vals=()
        for _ in $(seq "$RUNS"); do
            line=$(taskset -c 1 "$LG" p2p --port "$PORT" --qos "$qos" --payload-format json \
                --topic "$TOPIC" --duration "$DURATION" --json --pid "$PID") || {
                echo "loadgen failed (contracts=$mode qos=$qos): $line" >&2; stop; exit 1; }
            lost=$(echo "$line" | python3 -c 'import sys,json; print(json.load(sys.stdin)["lost"])')
            [ "$lost" = 0 ] || { echo "messages lost with contracts=$mode qos=$qos" >&2; stop; exit 1; }
            vals+=("$(echo "$line" | python3 -c 'import sys,json; print(json.load(sys.stdin)["msgs_per_s"])')")
        done
        RESULT[$mode,$qos]=$(printf '%s\n' "${vals[@]}" | median)
        echo "contracts=$mode qos=$qos msgs/s: ${vals[*]} (median ${RESULT[$mode,$qos]})"
    done
    stop
done

{
    echo "# Contract enforcement cost"
    echo
    echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores; broker on core 0, load generator on core 1;"
    echo "p2p flat out, JSON samples on the modeled tag \`$TOPIC\`, median of $RUNS runs of ${DURATION}s."
    echo
    echo "| QoS | contracts on (msg/s) | contracts off (msg/s) | on/off | cost |"
    echo "|---|---:|---:|---:|---:|"
    for qos in 0 1; do
        on=${RESULT[true,$qos]}; off=${RESULT[false,$qos]}
        python3 -c "on,off=$on,$off; print(f'| {$qos} | {on:,.0f} | {off:,.0f} | {on/off:.2f}× | {max(0,(1-on/off))*100:.1f} % |')"
    done
} >"$OUT"
cat "$OUT"
