#!/usr/bin/env bash
# Install the package with its test extras on a CPU machine. torch is pinned to the local CPU
# wheel first: any other torch spec would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet torch==2.13.0
python3 -m pip install --quiet -e ".[${1:-test}]"
