#!/usr/bin/env bash
# CI: install, lint and format check (ruff), run the test suite (Triton kernels under the interpreter;
# lmms-eval, vLLM, transformers 5.17 and timm in side environments the tests build with
# ci/lmms_eval_env.sh, ci/lmms_eval_media_env.sh, ci/vllm_env.sh, ci/transformers_env.sh and
# ci/timm_env.sh), the torch backend's tests again on its eager CPU path, compile every kernel for
# sm_80/sm_90 and check for spills, and run the CPU benchmarks once as a smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install.sh test
python3 -m ruff check .
python3 -m ruff format --check .
export TRITON_DEFAULT_FP_FUSION=1
python3 -m pytest -q
# the torch backend's eager CPU path (other devices, no compiler) through the same tests
VIDCOM2_NATIVE_CPU=0 python3 -m pytest -q -k "torch and not native" tests
python3 bench/aot_report.py --arch 80 90
python3 -m pytest bench/bench_cpu.py -q --benchmark-disable
python3 bench/bench_stages.py --shapes smoke --rounds 1 > /dev/null
python3 bench/bench_methods.py --shapes smoke --rounds 1 > /dev/null
"$(bash ci/vllm_env.sh)" bench/bench_vllm.py --shapes smoke --dtypes float32 --rounds 1 > /dev/null
