#!/usr/bin/env bash
# A side virtualenv with another transformers release over an existing environment, for the adapter
# tests on the oldest supported transformers (tests/test_transformers_versions.py). It sees the
# packages of $PYTHON's environment (default python3: torch, this package, ...) after its own, so
# only transformers (and what that release needs) is replaced. Idempotent.
# Usage: [PYTHON=python] bash ci/transformers_env.sh VERSION   (prints the venv's python)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: ci/transformers_env.sh VERSION}
python=${PYTHON:-python3}
venv=.venvs/transformers-$version
check="import transformers, sys; sys.exit(transformers.__version__ != '$version')"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
  echo "$venv/bin/python"
  exit 0
fi
rm -rf "$venv"
"$python" -m venv "$venv"
parent=$("$python" -c "import site; print(' '.join(repr(p) for p in site.getsitepackages()))")
own=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# a .pth line that starts with "import" runs: the parent's site dirs (and their .pth files) come last
echo "import site; list(map(site.addsitedir, ($parent,)))" > "$own/parent_environment.pth"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "transformers==$version" >&2
"$venv/bin/python" -c "$check"
echo "$venv/bin/python"
