#!/usr/bin/env bash
# Soak: Warden (release build, rules guard on input and output, audit into
# PostgreSQL with durable answers) in front of the shared harness's fake
# upstream, under a fixed-rate open-loop load from a second process
# (tests/python/load.py) for a bounded time. Samples the gateway's resident
# memory, open file descriptors and threads every 10 s, then checks that
# every acknowledged request was audited exactly once and the chains verify.
#
#   bench/soak.sh [SECONDS] [RATE]      # default 600 s at 100 requests/s
#
# Needs nginx with the Lua module (see bench/gateway.sh) and the test
# Python environment (scripts/python-env.sh). Everything is on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
rate="${2:-100}"
source bench/lib.sh
bench_binary
python="$(bash scripts/python-env.sh)"
bench_database warden_soak
work="$(mktemp -d)"

gw_pid=""
cleanup() {
    bench_stop "$gw_pid"
    bench_teardown
    rm -rf "$work"
}
trap cleanup EXIT

"$shared/fake_upstream.sh" start >/dev/null
RUST_LOG=warn "$warden" serve --config bench/gateway/warden.toml > "$work/gateway.log" 2>&1 &
gw_pid=$!
bench_wait_ready || true

sample() { # seconds-since-start -> "t rss_kib fds threads"
    local rss threads fds
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$gw_pid/status")
    threads=$(awk '/^Threads/ {print $2}' "/proc/$gw_pid/status")
    fds=$(ls "/proc/$gw_pid/fd" | wc -l)
    echo "$1 $rss $fds $threads"
}

echo "soak: $seconds s at $rate requests/s through 127.0.0.1:18090"
"$python" tests/python/load.py http://127.0.0.1:18090 "$key" fake-model "$rate" "$seconds" \
    "$work/load.jsonl" &
load_pid=$!
start=$(date +%s)
: > "$work/samples"
while kill -0 "$load_pid" 2>/dev/null; do
    sample $(( $(date +%s) - start )) | tee -a "$work/samples"
    # Bounded: the load ends by itself; this loop cannot outlive it by more than 10 s.
    for _ in $(seq 10); do kill -0 "$load_pid" 2>/dev/null && sleep 1; done
done
wait "$load_pid"
sleep 2
sample $(( $(date +%s) - start )) | tee -a "$work/samples"

# Acknowledged request ids (200, or 400 content_filter) against the audit.
"$python" - "$work/load.jsonl" "$work/acked" <<'EOF'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])][1:]
statuses = collections.Counter(str(r.get("status") or r.get("transport_error")) for r in rows)
acked = [r["request_id"] for r in rows
         if r.get("status") == 200
         or (r.get("status") == 400 and (r.get("error") or {}).get("code") == "content_filter")]
lat = sorted(r["done"] - r["sent"] for r in rows if r.get("status") == 200)
open(sys.argv[2], "w").write("\n".join(acked) + "\n")
p = lambda q: lat[int(q * (len(lat) - 1))] * 1000 if lat else float("nan")
print(f"sent={len(rows)} statuses={dict(statuses)} acknowledged={len(acked)} "
      f"latency_ms p50={p(0.5):.1f} p99={p(0.99):.1f} max={p(1.0):.1f}")
EOF
psql "$DATABASE_URL" -qc "CREATE TEMP TABLE acked (id text)" \
    -c "\\copy acked FROM '$work/acked'" \
    -tAc "WITH d AS (SELECT request_id, count(*) AS n FROM audit_events WHERE kind = 'decision' GROUP BY 1)
          SELECT 'audited=' || count(*) FILTER (WHERE d.n = 1) || ' lost=' || count(*) FILTER (WHERE d.n IS NULL)
                 || ' duplicated=' || count(*) FILTER (WHERE d.n > 1)
          FROM acked a LEFT JOIN d ON d.request_id = a.id"
"$warden" audit verify | head -c 400; echo
awk 'NR == 1 {r0 = $2; f0 = $3} {if ($2 > rm) rm = $2; if ($3 > fm) fm = $3; r = $2; f = $3; t = $4}
     END {printf "rss_kib start=%d max=%d end=%d  fds start=%d max=%d end=%d  threads end=%d\n", r0, rm, r, f0, fm, f, t}' \
    "$work/samples"
