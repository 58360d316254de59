#!/usr/bin/env bash
# A Python environment for the tests that drive Warden with official clients
# (the `openai` package) and property-based API testing (`schemathesis`,
# tests/tests/schemathesis.rs). Created once under ~/.cache/warden/venv;
# prints the interpreter's path.
set -euo pipefail
VENV="${WARDEN_VENV:-$HOME/.cache/warden/venv}"
OPENAI_VERSION="1.109.1"
SCHEMATHESIS_VERSION="4.32.5"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" >&2
fi
if ! "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION" >&2
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
fi
echo "$VENV/bin/python"
