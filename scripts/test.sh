#!/usr/bin/env bash
# The one test command: fetches the bundled model, makes sure PostgreSQL
# answers, then runs the format check, clippy, every test and a short
# bounded run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build outside the clone so repeated runs (and CI) reuse compiled crates.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/warden/target}"
# Incremental caches only help edit-compile loops and cost gigabytes here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
WARDEN_TEST_MODEL="$(bash scripts/fetch-model.sh)"
export WARDEN_TEST_MODEL
DATABASE_URL="$(bash scripts/ensure-postgres.sh)"
export DATABASE_URL
WARDEN_PYTHON="$(bash scripts/python-env.sh)"
export WARDEN_PYTHON

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== fuzz (bounded; scripts/fuzz.sh 600 runs longer by hand)"
bash scripts/fuzz.sh "${WARDEN_FUZZ_SECONDS:-20}"
echo "== quick start"
WARDEN_BUILD_PROFILE=test bash scripts/quickstart-check.sh
