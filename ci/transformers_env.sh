#!/usr/bin/env bash
# A side virtualenv with another transformers release over an existing environment, for the adapter
# tests on the oldest supported transformers (tests/test_transformers_versions.py). It sees the
# packages of $PYTHON's environment (default python3: torch, this package, ...) after its own: its
# own are transformers VERSION and everything that release needs, at their versions in
# ci/locks/transformers-VERSION.txt (ci/side_env.sh), so only those are replaced. Idempotent.
# Usage: [PYTHON=python] bash ci/transformers_env.sh [--resolve] VERSION   (prints the venv's python;
# --resolve: transformers VERSION resolved alone in a plain venv, writing the lock, as ci/lock.sh does)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/side_env.sh
flag=()
if [ "${1:-}" = "--resolve" ]; then
  flag=(--resolve)
  shift
fi
version=${1:?usage: ci/transformers_env.sh [--resolve] VERSION}
side_env_args "transformers-$version" "${flag[@]}" "${2:-}"
side_env_reused && exit 0
own=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ "$resolve" = 1 ]; then
  side_env_pip "transformers==$version"
else
  side_env_over "${PYTHON:-python3}"
  side_env_install_lock
  "$py" -c "import transformers, sys; sys.exit(transformers.__version__ != '$version')"
fi
side_env_finish "$own"
