#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each.
#
#   scripts/fuzz.sh            # 20 s per target (what scripts/test.sh runs)
#   scripts/fuzz.sh 600        # 10 minutes per target, by hand
#   scripts/fuzz.sh 60 verdict spool   # only these targets
#
# cargo-fuzz needs rustc flags that are unstable; the machine's one
# toolchain (stable) takes them with RUSTC_BOOTSTRAP=1, so no nightly is
# needed (FUZZ_TOOLCHAIN=nightly uses one where it is installed). Installs
# cargo-fuzz from crates.io if it is missing. The first build of the
# instrumented crates takes about 15-20 min on 2 cores; later ones rebuild
# only the changed workspace crates (about 2 min). The corpus grows in $FUZZ_DIR/corpus/<target>
# (seeded from fuzz/seeds/<target>), so later runs start where earlier ones
# stopped. A crash stops the run: libFuzzer prints the input and saves it
# under $FUZZ_DIR/artifacts/<target>/; turn it into a regression test in the
# crate at fault, fix the bug, and add the input to fuzz/seeds/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-20}"
shift || true
FUZZ_DIR="${FUZZ_DIR:-$HOME/.cache/warden/fuzz}"
# Its own target dir: instrumented builds share nothing with the workspace's.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$FUZZ_DIR/target}"
export CARGO_INCREMENTAL=0
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    CARGO=(cargo "+$FUZZ_TOOLCHAIN")
else
    CARGO=(cargo)
    export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked >&2
fi

if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cd fuzz && "${CARGO[@]}" fuzz list)
fi

# No sanitizer: the code under test is safe Rust, and libFuzzer still
# catches panics, stack overflows, timeouts and runaway memory. Debug
# assertions (overflow checks) are on.
FLAGS=(--sanitizer none --debug-assertions)

start=$(date +%s)
(cd fuzz && "${CARGO[@]}" fuzz build "${FLAGS[@]}")
echo "fuzz: built ${#TARGETS[@]} targets in $(( $(date +%s) - start )) s"

for target in "${TARGETS[@]}"; do
    corpus="$FUZZ_DIR/corpus/$target"
    mkdir -p "$corpus" "$FUZZ_DIR/artifacts/$target"
    seeds=()
    [ -d "fuzz/seeds/$target" ] && seeds=("$PWD/fuzz/seeds/$target")
    log="$FUZZ_DIR/$target.log"
    if ! (cd fuzz && "${CARGO[@]}" fuzz run "${FLAGS[@]}" "$target" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 \
        -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$FUZZ_DIR/artifacts/$target/" >"$log" 2>&1); then
        # The panic's message comes before its long backtrace: show both.
        grep -m1 -A6 'panicked at' "$log" >&2 || true
        tail -n 40 "$log" >&2
        echo "fuzz: $target FAILED; the input is in $FUZZ_DIR/artifacts/$target/" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
    echo "fuzz $target: ${runs:-?} runs in ${SECONDS_PER_TARGET} s, corpus $(find "$corpus" -type f | wc -l) inputs, peak RSS ${rss:-?} MB"
done
echo "fuzz: ${#TARGETS[@]} targets, ${SECONDS_PER_TARGET} s each, no crash ($(( $(date +%s) - start )) s in all)"
