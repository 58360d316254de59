#!/usr/bin/env bash
# Warden's inference benchmark and llama.cpp on the same prompts, in one run,
# and the ratios of issue #3.
#
#   bench/run.sh [--threads 1,2] [--repeats 2] [--model PATH]
#
# Builds `warden` in release (set WARDEN_BIN to use a built binary instead;
# WARDEN_BENCH_EXAMPLE=1 builds only the inference crate's `bench` example,
# the same code without the gateway), runs `warden bench --json`, then
# bench/llamacpp.py on the prompts of that report (installing
# llama-cpp-python into ~/.cache/warden/ the first time).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
threads=1,2
repeats=2
model="${WARDEN_MODEL_DIR:-$HOME/.cache/warden/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --repeats) repeats="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        *) echo "usage: $0 [--threads 1,2] [--repeats N] [--model PATH]" >&2; exit 2 ;;
    esac
done

# llama.cpp first builds itself if needed; do it before timing anything.
python3 "$here/llamacpp.py" --install-only

target="${CARGO_TARGET_DIR:-$root/target}"
if [ -n "${WARDEN_BENCH_EXAMPLE:-}" ]; then
    (cd "$root" && cargo build --release -q -p warden-inference --example bench)
    bench=("$target/release/examples/bench")
else
    if [ -z "${WARDEN_BIN:-}" ]; then
        (cd "$root" && cargo build --release -q -p warden-gateway --bin warden)
        WARDEN_BIN="$target/release/warden"
    fi
    bench=("$WARDEN_BIN" bench)
fi

# BENCH_OUT=DIR keeps both JSON reports there.
if [ -n "${BENCH_OUT:-}" ]; then
    out="$BENCH_OUT"
    mkdir -p "$out"
else
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
fi
"${bench[@]}" --model "$model" --threads "$threads" --repeats "$repeats" --json >"$out/warden.json"
python3 "$here/llamacpp.py" --ours "$out/warden.json" --model "$model" --threads "$threads" --repeats "$repeats" --json >"$out/llamacpp.json"
python3 "$here/llamacpp.py" --ours "$out/warden.json" --theirs "$out/llamacpp.json"
