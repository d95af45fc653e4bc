#!/usr/bin/env bash
# Build the side virtualenv the lmms-eval end-to-end test runs in (tests/test_lmms_eval.py):
# lmms-eval from PyPI, torch + torchvision (lmms-eval needs torchvision, and so do transformers'
# Qwen video processors), decord (lmms-eval's qwen2_vl imports it), and this package, editable,
# every package at its version in ci/locks/lmms-eval.txt (ci/side_env.sh). Idempotent: a venv
# built from the same lock and scripts is reused.
# Usage: bash ci/lmms_eval_env.sh [--resolve] [VENV]   (default .venvs/lmms-eval; prints the venv's
# python; --resolve: from ci/locks/lmms-eval.in, writing the lock, as ci/lock.sh does)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/side_env.sh
side_env_args lmms-eval "$@"
side_env_reused && exit 0
if [ "$resolve" = 1 ]; then
  side_env_pip -c "$inputs" torch torchvision
  side_env_pip -c "$inputs" setuptools wheel lmms-eval decord -e ".[video]"
else
  side_env_install_lock
  side_env_pip --no-deps --no-build-isolation -e .
fi
side_env_finish
