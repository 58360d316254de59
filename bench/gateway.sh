#!/usr/bin/env bash
# Gateway overhead benchmark: Warden (release build, rules guard on input and
# output, audit written to PostgreSQL) in front of the shared harness's fake
# upstream, next to the fake upstream alone, at concurrency 1, 8 and 64.
#
#   bench/gateway.sh [DURATION]        # default 10s per level
#   WARDEN_BIN=path/to/warden bench/gateway.sh 8s   # measure that binary
#
# Uses ../shared/bench (SHARED_BENCH to override): nginx + Lua fake upstream
# and wrk (apt-get install nginx libnginx-mod-http-lua wrk). Everything is on
# 127.0.0.1; each load run is bounded by DURATION and `timeout`. Prints the
# harness's lines plus PostgreSQL's CPU time per request.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"
source bench/lib.sh
bench_binary
bench_database warden_bench

gw_pid=""
cleanup() {
    bench_stop "$gw_pid"
    bench_teardown
}
trap cleanup EXIT

"$shared/fake_upstream.sh" start
RUST_LOG=warn "$warden" serve --config bench/gateway/warden.toml > /tmp/warden-bench.log 2>&1 &
gw_pid=$!
bench_wait_ready || true

# PostgreSQL's CPU (all its processes), in clock ticks, before and after.
pg_ticks() {
    local total=0
    for pid in $(pgrep -x postgres || true); do
        read -r -a f < "/proc/$pid/stat" 2>/dev/null || continue
        total=$((total + f[13] + f[14]))
    done
    echo "$total"
}
audited() { psql "$DATABASE_URL" -tAc "SELECT count(*) FROM audit_events" 2>/dev/null || echo 0; }

pg_before=$(pg_ticks)
rows_before=$(audited)
out="$(mktemp)"
WITH_FLOOR=1 GW_KEY="$key" GW_PIDS="$gw_pid" \
    "$shared/gateway_overhead.sh" http://127.0.0.1:18090 fake-model "$duration" | tee "$out"
sleep 2   # let the audit writer flush its last batch
pg_after=$(pg_ticks)
rows_after=$(audited)
requests=$(grep -E '^c=' "$out" | sed -E 's/.* requests=([0-9]+).*/\1/' | paste -sd+ | bc)
hz=$(getconf CLK_TCK)
echo "audit rows written: $((rows_after - rows_before)) for $requests gateway requests"
# Conservative: the CPU of the warm-up requests is counted, their number is not.
echo "postgres_cpu_us_per_req=$(echo "($pg_after - $pg_before) * 1000000 / $hz / $requests" | bc)"
