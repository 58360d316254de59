# Shared set-up of the gateway benchmarks; sourced, not run. Each script
# calls these in order, then starts its gateway on bench/gateway/warden.toml
# (127.0.0.1:18090) in front of the shared harness's fake upstream.

shared="${SHARED_BENCH:-$PWD/../shared/bench}"

# Sets $warden: $WARDEN_BIN as given (to compare two builds in one sitting),
# else the release build, built now.
bench_binary() {
    if [ -n "${WARDEN_BIN:-}" ]; then
        warden="$WARDEN_BIN"
    else
        export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/warden/target}"
        cargo build --release -p warden-gateway --bin warden
        warden="$CARGO_TARGET_DIR/release/warden"
    fi
}

# A fresh database named $1_$$ (migrated; exported as DATABASE_URL), the
# server's admin URL in $admin and a new tenant key in $key.
bench_database() {
    admin="$(bash scripts/ensure-postgres.sh)"
    db="$1_$$"
    psql "$admin" -qc "CREATE DATABASE $db"
    export DATABASE_URL="${admin%/*}/$db${BENCH_DB_QUERY:-}"
    "$warden" migrate >/dev/null
    key="$("$warden" keys create --tenant bench --label bench 2>/dev/null)"
}

# Stops process $1 (if any) and waits for it.
bench_stop() {
    if [ -n "$1" ]; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}

# Stops the fake upstream and drops the database: every script's exit.
bench_teardown() {
    "$shared/fake_upstream.sh" stop >/dev/null 2>&1 || true
    psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
}

# Waits up to $1 tenths of a second (default 100) for the gateway's /readyz.
bench_wait_ready() {
    for _ in $(seq "${1:-100}"); do
        curl -fsS -m 1 http://127.0.0.1:18090/readyz >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
