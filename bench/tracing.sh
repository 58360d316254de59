#!/usr/bin/env bash
# Tracing overhead: the gateway benchmark (bench/gateway.sh's setup: release
# build, rules guard on input and output, audit into PostgreSQL, the shared
# harness's fake upstream) with OTLP export to a local sink on and off,
# alternating, at one concurrency; prints the throughput ratio on/off.
#
#   bench/tracing.sh [DURATION] [ROUNDS]     # default 8s per run, 2 rounds
#
# Also prints the gateway's CPU time per request (the OTLP export thread
# included), which varies less than throughput on a shared machine.
#
# Env: CONCURRENCY (default 8); WARDEN_BIN overrides the binary (no build
# then). Everything runs on 127.0.0.1; every load run is bounded by
# DURATION (the harness also wraps wrk in `timeout`).
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-8s}"
rounds="${2:-2}"
sink_port=18318
source bench/lib.sh
bench_binary
bench_database warden_tracebench

gw_pid=""
sink_pid=""
report="$(mktemp)"
stop_gateway() {
    bench_stop "$gw_pid"
    gw_pid=""
}
cleanup() {
    stop_gateway
    bench_stop "$sink_pid"
    bench_teardown
}
trap cleanup EXIT

"$shared/fake_upstream.sh" start
python3 bench/otlp_sink.py "$sink_port" "$report" &
sink_pid=$!

run() { # on|off -> prints "rps cpu_us_per_request"
    local mode="$1"
    if [ "$mode" = on ]; then
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" RUST_LOG=warn \
            "$warden" serve --config bench/gateway/warden.toml >/tmp/warden-tracebench.log 2>&1 &
    else
        RUST_LOG=warn "$warden" serve --config bench/gateway/warden.toml >/tmp/warden-tracebench.log 2>&1 &
    fi
    gw_pid=$!
    bench_wait_ready || true
    CONCURRENCY="${CONCURRENCY:-8}" WARMUP=2s GW_KEY="$key" GW_PIDS="$gw_pid" \
        "$shared/gateway_overhead.sh" http://127.0.0.1:18090 fake-model "$duration" 2>/dev/null \
        | grep -E '^c=' | sed -E 's/.* rps=([0-9.]+).* gw_cpu_us_per_req=([0-9.]+).*/\1 \2/'
    stop_gateway
}

on_total=0
off_total=0
on_cpu=0
off_cpu=0
for r in $(seq "$rounds"); do
    read -r off off_us < <(run off)
    read -r on on_us < <(run on)
    echo "round $r: tracing off rps=$off cpu_us_per_req=$off_us  on rps=$on cpu_us_per_req=$on_us"
    off_total=$(echo "$off_total + $off" | bc -l)
    on_total=$(echo "$on_total + $on" | bc -l)
    off_cpu=$(echo "$off_cpu + $off_us" | bc -l)
    on_cpu=$(echo "$on_cpu + $on_us" | bc -l)
done
kill "$sink_pid" && wait "$sink_pid" 2>/dev/null || true
sink_pid=""
cat "$report"
echo "throughput_ratio_on_off=$(echo "scale=3; $on_total / $off_total" | bc -l)"
echo "cpu_per_request_ratio_on_off=$(echo "scale=3; $on_cpu / $off_cpu" | bc -l)"
