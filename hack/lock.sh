#!/usr/bin/env bash
# Regenerates the images' hash-locked requirements (hack/requirements-worker.txt, hack/requirements-operator.txt)
# from pyproject.toml's extras at the exact versions of hack/constraints.txt, for the images' platform (CPython
# 3.11 on x86_64 manylinux: the python:3.11 slim base of both Dockerfile targets). The Dockerfile installs them
# with `pip install --require-hashes --only-binary=:all:`; tests/chart/test_lock.py checks they match the
# constraints and pyproject.toml. Needs PyPI (uv reads metadata and hashes, it downloads no wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.8
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/pip" install -q "uv==$UV_VERSION"
for extra in worker operator; do
  "$tools/bin/uv" pip compile pyproject.toml hack/image-build.in --extra "$extra" \
    -c hack/constraints.txt --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --custom-compile-command "hack/lock.sh" -o "hack/requirements-$extra.txt" --quiet
done
