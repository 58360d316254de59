#!/usr/bin/env bash
# Warden in one command: fetches the bundled model, finds or starts
# PostgreSQL, builds the gateway in release mode, migrates, creates a demo
# key, starts the gateway on 127.0.0.1:8080 and prints how to call it.
# A second run reuses all of it (model, cluster, build, key) and restarts
# the gateway.
#
#   scripts/quickstart.sh          # start
#   scripts/quickstart.sh stop     # stop the gateway (and the private cluster, if one was started)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
state="$root/state"
mkdir -p "$state"
listen="${WARDEN_LISTEN:-127.0.0.1:8080}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/warden/target}"
# release by default; the test script's check uses `test` (optimised, built with the tests).
profile="${WARDEN_BUILD_PROFILE:-release}"
if [ "$profile" = release ]; then profile_dir=release; else profile_dir=debug; fi
warden="$CARGO_TARGET_DIR/$profile_dir/warden"
pidfile="$state/warden.pid"

stop_gateway() {
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")"
        for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
}

if [ "${1:-}" = "stop" ]; then
    stop_gateway
    if [ -f "$state/pg/postmaster.pid" ]; then
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
        if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$bin/pg_ctl" -D "$state/pg" stop; else "$bin/pg_ctl" -D "$state/pg" stop; fi
    fi
    exit 0
fi

echo "== model"
model="$(bash scripts/fetch-model.sh)"
echo "$model"

echo "== PostgreSQL"
if [ -n "${DATABASE_URL:-}" ]; then
    database_url="$DATABASE_URL"
else
    # 127.0.0.1:5432 when a server answers there, else a private cluster
    # under state/pg (port 55432).
    admin="$(WARDEN_PG_DIR="$state/pg" bash scripts/ensure-postgres.sh)"
    if ! psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = 'warden'" | grep -q 1; then
        psql "$admin" -qc "CREATE DATABASE warden"
    fi
    database_url="${admin%/*}/warden"
fi
export DATABASE_URL="$database_url"
echo "$DATABASE_URL"

echo "== build ($profile)"
cargo build --profile "$profile" -p warden-gateway --bin warden

echo "== migrate"
"$warden" migrate

echo "== demo key"
keyfile="$state/demo-key"
if [ ! -s "$keyfile" ]; then
    "$warden" keys create --tenant demo --label quickstart > "$keyfile.tmp"
    mv "$keyfile.tmp" "$keyfile"
    chmod 600 "$keyfile"
fi
key="$(cat "$keyfile")"

echo "== gateway"
stop_gateway
WARDEN_LISTEN="$listen" nohup "$warden" serve --config quickstart/warden.toml > "$state/warden.log" 2>&1 &
echo $! > "$pidfile"
ready=""
for _ in $(seq 600); do
    if curl -fsS "http://$listen/readyz" > /dev/null 2>&1; then ready=1; break; fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then break; fi
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "the gateway did not become ready; its log ($state/warden.log):" >&2
    tail -n 30 "$state/warden.log" >&2
    exit 1
fi
echo "listening on http://$listen (pid $(cat "$pidfile"), log $state/warden.log)"

cat <<MSG

Warden is running. Try it:

curl -s http://$listen/v1/chat/completions \\
  -H "Authorization: Bearer $key" -H "Content-Type: application/json" \\
  -d '{"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 32}'

python3 - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="http://$listen/v1", api_key="$key")
reply = client.chat.completions.create(
    model="smollm2-135m", messages=[{"role": "user", "content": "Say hello."}], max_tokens=32)
print(reply.choices[0].message.content, reply.model_extra.get("warden"))
PY

The bundled SmolLM2-135M model answers; the demo policy guards input and
output with the rules backend (quickstart/policies/demo.yaml). SmolLM2 is not
a safety classifier: for Llama Guard, set in quickstart/warden.toml under
[[guards]] llama-guard-local
    path = "/models/Llama-Guard-3-1B.Q8_0.gguf"
    variant = "llama-guard-3-1b"
and add llama-guard-local to the policy's backends. Stop: scripts/quickstart.sh stop
MSG
