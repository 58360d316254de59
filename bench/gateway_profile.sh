#!/usr/bin/env bash
# Where the gateway's CPU goes per request: the release gateway of
# bench/gateway.sh (rules guard on input and output, audit written to
# PostgreSQL) under valgrind's callgrind, in front of the shared harness's
# fake upstream. Instruction counts do not depend on what else the machine
# is doing, so two runs compare even on a busy box.
#
#   bench/gateway_profile.sh [DURATION] [CONNECTIONS]   # default 20s, 4
#
# Instrumentation starts after a warm-up and covers one wrk run of DURATION (at
# most 120 s) at CONNECTIONS keep-alive connections; prints the requests
# served, instructions per request, and the top functions by self and by
# inclusive cost. WARDEN_BIN overrides the binary (no build then); the raw
# profile is kept as $OUT (default /tmp/warden-callgrind.out) for
# callgrind_annotate or kcachegrind. Everything is on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20s}"
conns="${2:-4}"
secs="${duration%s}"
[[ "$secs" =~ ^[0-9]+$ && "$secs" -ge 1 && "$secs" -le 120 ]] || {
    echo "DURATION must be 1s..120s, got $duration" >&2
    exit 2
}
out="${OUT:-/tmp/warden-callgrind.out}"
top="${TOP:-40}"
for tool in valgrind callgrind_control callgrind_annotate wrk curl psql; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool (apt-get install valgrind wrk curl postgresql-client)" >&2; exit 1; }
done
source bench/lib.sh
bench_binary
bench_database warden_profile

vg_pid=""
cleanup() {
    bench_stop "$vg_pid"
    bench_teardown
}
trap cleanup EXIT

"$shared/fake_upstream.sh" start >/dev/null
rm -f "$out" "$out".*
RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out" \
    "$warden" serve --config bench/gateway/warden.toml > /tmp/warden-profile.log 2>&1 &
vg_pid=$!
bench_wait_ready 1200 || {
    echo "gateway did not start under valgrind; see /tmp/warden-profile.log" >&2
    exit 1
}

run_wrk() { # DURATION
    GW_MODEL=fake-model GW_KEY="$key" timeout -k 5 $(( ${1%s} + 60 )) \
        wrk -t 1 -c "$conns" -d "$1" --timeout 10s -s "$shared/lua/chat.lua" \
        http://127.0.0.1:18090/v1/chat/completions
}
# Warm-up (pools, caches, first policy merge), not collected.
run_wrk 5s >/dev/null
sleep 1
callgrind_control -i on "$vg_pid" >/dev/null
result="$(run_wrk "$duration" | grep '^RESULT ' || true)"
# Let the audit writer store the last batch inside the profile.
sleep 1
callgrind_control -i off "$vg_pid" >/dev/null
callgrind_control -d "$vg_pid" >/dev/null
requests="$(sed -E 's/.* requests=([0-9]+).*/\1/' <<<"$result")"
[[ "$requests" =~ ^[0-9]+$ && "$requests" -gt 0 ]] || { echo "no requests served: $result" >&2; exit 1; }
echo "# $result"

# The dump of the running process is the file with the highest suffix.
dump="$(ls -1 "$out"* | sort -V | tail -1)"
# Function lines only (after the totals block), cut to a readable width;
# awk reads to the end so callgrind_annotate never sees a closed pipe.
functions() { # --inclusive=yes|no
    callgrind_annotate "$1" --threshold=100 "$dump" 2>/dev/null \
        | awk -v top="$top" '/^-+$/ { sep++; next } sep >= 4 && NF && n < top { n++; print substr($0, 1, 160) }'
}
total="$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t { gsub(",", "", $1); t = $1 } END { print t }')"
echo "requests=$requests instructions=$total instructions_per_request=$(( total / requests ))"
echo "## top $top by self cost (instructions, share of all)"
functions --inclusive=no
echo "## top $top by inclusive cost"
functions --inclusive=yes
echo "# profile: $dump"
