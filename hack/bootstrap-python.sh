#!/usr/bin/env bash
# Creates .venv and installs the project with every extra, at the versions of hack/constraints.txt. Skips what
# is already installed: a marker file records the hash of pyproject.toml and the constraints, so a second run
# costs a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
marker=.venv/.relora-installed
want=$(cat pyproject.toml hack/constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c hack/constraints.txt -e ".[worker,operator,dev]"
echo "$want" > "$marker"
