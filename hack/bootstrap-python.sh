#!/usr/bin/env bash
# Creates .venv and installs the project with every extra. Skips what is already installed:
# a marker file records the hash of pyproject.toml, so a second run costs a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
marker=.venv/.relora-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[worker,operator,dev]"
echo "$want" > "$marker"
