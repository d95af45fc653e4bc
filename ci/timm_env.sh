#!/usr/bin/env bash
# A side virtualenv with timm over an existing environment, for the adapter tests of PerceptionLM,
# whose vision tower is a timm model (tests/test_perception_lm.py). It sees the packages of
# $PYTHON's environment (default python3: torch, transformers, this package, ...) after its own:
# its own are timm and torchvision at their versions in ci/locks/timm.txt (ci/side_env.sh), both
# installed without dependencies, and ci/torchvision_shim.py, which lets PyPI's torchvision (a CUDA
# build: no wheel matches the CPU torch 2.13) import its pure-Python part. Idempotent.
# Usage: [PYTHON=python] bash ci/timm_env.sh [--resolve] [VENV]   (prints the venv's python;
# --resolve: the versions of ci/locks/timm.in, writing the lock, as ci/lock.sh does)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/side_env.sh
side_env_args timm "$@"
side_env_reused ci/torchvision_shim.py && exit 0
side_env_over "${PYTHON:-python3}"
if [ "$resolve" = 1 ]; then
  side_env_pip --no-deps -r "$inputs"
else
  side_env_install_lock
fi
cp ci/torchvision_shim.py "$own/vidcom2_torchvision_shim.py"
echo "import vidcom2_torchvision_shim" > "$own/vidcom2_torchvision_shim.pth"
"$py" -c "import timm, transformers; timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32)"
side_env_finish "$own"
