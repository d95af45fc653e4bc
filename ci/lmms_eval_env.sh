#!/usr/bin/env bash
# Build the side virtualenv the lmms-eval end-to-end test runs in (tests/test_lmms_eval.py):
# lmms-eval from PyPI, torch + torchvision (lmms-eval needs torchvision, and so do transformers'
# Qwen video processors), decord (lmms-eval's qwen2_vl imports it), and this package, editable.
# Idempotent: an environment whose stamp matches the constraints file is reused.
# Usage: bash ci/lmms_eval_env.sh [VENV]   (default .venvs/lmms-eval; prints the venv's python)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venvs/lmms-eval}
stamp="$venv/.vidcom2-stamp"
want=$(cat ci/lmms-eval-constraints.txt setup.py | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c ci/lmms-eval-constraints.txt)
"${pip[@]}" torch torchvision >&2
"${pip[@]}" lmms-eval decord -e ".[video]" >&2
echo "$want" > "$stamp"
echo "$venv/bin/python"
