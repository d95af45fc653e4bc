#!/usr/bin/env bash
# A side virtualenv with another transformers release over this machine's packages, for the adapter
# tests on the oldest supported transformers (tests/test_transformers_versions.py). It sees the main
# environment's site-packages (torch, this package installed editable) and shadows transformers only.
# Idempotent. Usage: bash ci/transformers_env.sh VERSION   (prints the venv's python)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: ci/transformers_env.sh VERSION}
venv=.venvs/transformers-$version
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import transformers, sys; sys.exit(transformers.__version__ != '$version')" 2>/dev/null; then
  echo "$venv/bin/python"
  exit 0
fi
rm -rf "$venv"
python3 -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "transformers==$version" >&2
echo "$venv/bin/python"
