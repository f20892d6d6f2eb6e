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

RUNS=${RUNS:-5}
DURATION=${DURATION:-4}
PORT=18830
TOPIC=bench/lab/load/line-1/probe/value
G=target/release/gantry
LG=target/release/gantry-loadgen
WORK=/tmp/gantry-bench-contracts
OUT=bench/results/contracts.md
[ "${SKIP_BUILD:-}" = 1 ] || cargo build --release -p gantry -p gantry-loadgen >/dev/null || exit 1
mkdir -p "$WORK" bench/results

config() { # $1 = true|false, $2 = port, $3 = dir
    mkdir -p "$3"
    cat >"$3/gantry.toml" <<CONF
data_dir = "$3/data"
model = "$PWD/bench/contracts-model.toml"
[mqtt]
bind = "127.0.0.1:$2"
[auth]
allow_anonymous = true
[contracts]
enabled = $1
unmodeled = "allow"
# The historian's own cost is measured by bench/historian.sh.
[historian]
enabled = false
CONF
}

start() { # $1 = dir, $2 = port; prints the pid
    rm -rf "$1/data"
    GANTRY_LOG=warn taskset -c 0 "$G" run --config "$1/gantry.toml" >"$1/gantry.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$2") 2>/dev/null && { echo "$pid"; return 0; }
        sleep 0.1
    done
    echo "gantry did not start; see $1/gantry.log" >&2
    return 1
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Both brokers run side by side (idle one costs nothing) and the runs
# alternate on, off, on, off...: drift of a shared machine hits both alike.
config true "$PORT" "$WORK/on"
config false "$((PORT + 2))" "$WORK/off"
PID_ON=$(start "$WORK/on" "$PORT") || exit 1
PID_OFF=$(start "$WORK/off" "$((PORT + 2))") || { kill "$PID_ON"; exit 1; }
trap 'kill "$PID_ON" "$PID_OFF" 2>/dev/null' EXIT

declare -A RESULT
for qos in 0 1; do
    on_vals=(); off_vals=()
    for _ in $(seq "$RUNS"); do
        for mode in true false; do
            if [ "$mode" = true ]; then port=$PORT; pid=$PID_ON; else port=$((PORT + 2)); pid=$PID_OFF; fi
            line=$(taskset -c 1 "$LG" p2p --port "$port" --qos "$qos" --payload-format json \
                --topic "$TOPIC" --duration "$DURATION" --json --pid "$pid") || {
                echo "loadgen failed (contracts=$mode qos=$qos): $line" >&2; exit 1; }
            lost=$(echo "$line" | python3 -c 'import sys,json; print(json.load(sys.stdin)["lost"])')
            [ "$lost" = 0 ] || { echo "messages lost with contracts=$mode qos=$qos" >&2; exit 1; }
            rate=$(echo "$line" | python3 -c 'import sys,json; print(json.load(sys.stdin)["msgs_per_s"])')
            if [ "$mode" = true ]; then on_vals+=("$rate"); else off_vals+=("$rate"); fi
        done
    done
    RESULT[true,$qos]=$(printf '%s\n' "${on_vals[@]}" | median)
    RESULT[false,$qos]=$(printf '%s\n' "${off_vals[@]}" | median)
    echo "qos=$qos on: ${on_vals[*]} | off: ${off_vals[*]}"
done

{
    echo "# Contract enforcement cost"
    echo
    echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores; broker on core 0, load generator on core 1;"
    echo "p2p flat out, JSON samples on the modeled tag \`$TOPIC\`, median of $RUNS runs of ${DURATION}s,"
    echo "on and off alternating."
    echo
    echo "| QoS | contracts on (msg/s) | contracts off (msg/s) | on/off | cost |"
    echo "|---|---:|---:|---:|---:|"
    for qos in 0 1; do
        on=${RESULT[true,$qos]}; off=${RESULT[false,$qos]}
        python3 -c "on,off=$on,$off; print(f'| {$qos} | {on:,.0f} | {off:,.0f} | {on/off:.2f}× | {max(0,(1-on/off))*100:.1f} % |')"
    done
} >"$OUT"
cat "$OUT"
