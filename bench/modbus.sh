#!/usr/bin/env bash
# The Modbus connector's whole path under load: a Modbus TCP device
# (`gantry-loadgen modbus-server`, on core 1) whose N holding registers all
# change every 100 ms, polled by `gantry run` (on core 0) with one [[modbus]]
# device mapping every register to a modeled int tag; a mosquitto_sub
# subscriber (core 1) counts the samples that arrive. Reports offered and
# delivered points per second and Gantry's CPU per 10,000 points/s (CPU time
# from /proc, not wall time). Writes bench/results/modbus.md.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

DURATION=${DURATION:-10}
INTERVAL_MS=100
G=target/release/gantry
LG=target/release/gantry-loadgen
WORK=/tmp/gantry-bench-modbus
OUT=bench/results/modbus.md
[ "${SKIP_BUILD:-}" = 1 ] || cargo build --release -p gantry -p gantry-loadgen >/dev/null || exit 1
mkdir -p "$WORK" bench/results
CLK=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run_case() { # $1 = registers; prints "offered delivered cpu_pct"
    local n=$1 dir="$WORK/n$1" mport dport
    rm -rf "$dir"; mkdir -p "$dir"
    mport=$(free_port); dport=$(free_port)
    python3 - "$n" "$dport" >"$dir/plant.toml" <<'PY'
import sys
n, port = int(sys.argv[1]), int(sys.argv[2])
print('enterprise = "bench"\n[[site]]\nname = "lab"\n[[equipment]]\npath = "bench/lab/load/line-1/dev"')
for i in range(n):
    print(f'[equipment.tags.r{i:05d}]\ntype = "int"')
print(f'[[modbus]]\nname = "bench-dev"\nhost = "127.0.0.1"\nport = {port}\npoll_ms = 100\ntimeout_ms = 1000\nequipment = "bench/lab/load/line-1/dev"')
for i in range(n):
    print(f'[[modbus.point]]\ntag = "r{i:05d}"\ntable = "holding"\naddress = {i}\ntype = "uint16"')
PY
    cat >"$dir/gantry.toml" <<CONF
data_dir = "$dir/data"
model = "$dir/plant.toml"
[mqtt]
bind = "127.0.0.1:$mport"
[auth]
allow_anonymous = true
CONF
    taskset -c 1 "$LG" modbus-server --port "$dport" --registers "$n" --interval-ms $INTERVAL_MS \
        --duration $((DURATION + 20)) >"$dir/device.log" 2>&1 &
    local dev=$!
    GANTRY_LOG=warn taskset -c 0 "$G" run --config "$dir/gantry.toml" >"$dir/gantry.log" 2>&1 &
    local gpid=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$mport") 2>/dev/null && break; sleep 0.1; done
    sleep 3 # first polls, retained state
    local t0 t1
    t0=$(cpu_ticks $gpid)
    local got
    got=$(timeout "$DURATION" taskset -c 1 mosquitto_sub -h 127.0.0.1 -p "$mport" -t 'bench/lab/load/line-1/dev/#' 2>/dev/null | wc -l)
    t1=$(cpu_ticks $gpid)
    kill "$gpid" "$dev" 2>/dev/null; wait "$gpid" "$dev" 2>/dev/null
    local offered=$(( n * 1000 / INTERVAL_MS ))
    # The subscriber first receives the n retained values, then the changes.
    python3 -c "import sys; o,n,got,d,t0,t1,clk=map(float,sys.argv[1:]); print(int(o), round((got-n)/d), round(100*(t1-t0)/clk/d,1))" \
        "$offered" "$n" "$got" "$DURATION" "$t0" "$t1" "$CLK"
}

{
echo "# Modbus connector: whole path"
echo
echo "Run on $(date -u '+%Y-%m-%d %H:%M') UTC: $(nproc) cores; gantry on core 0, device and subscriber on core 1;"
echo "every register changes every ${INTERVAL_MS} ms, poll 100 ms, ${DURATION} s per case, uint16 registers to int tags, contracts on."
echo
echo "| points | offered (points/s) | delivered to a subscriber (points/s) | Gantry CPU | CPU per 10,000 points/s |"
echo "|---:|---:|---:|---:|---:|"
for n in ${CASES:-1000 5000 20000}; do
    read -r offered got cpu < <(run_case "$n")
    per=$(python3 -c "print(round($cpu * 10000 / max($got,1), 1))")
    echo "| $n | $offered | $got | ${cpu} % | ${per} % of a core |"
done
} | tee "$OUT"
