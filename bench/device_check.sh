#!/usr/bin/env bash
# The prepared device check: on a machine with a CUDA GPU, in at most 9 minutes, from a checkout
# (no install, no network: the package is imported from the working tree).
#
#   bash bench/device_check.sh [OUT_DIR]        (default: bench/device_check_out)
#
# 1. python -m pytest --device=cuda over the stage, compress, launch-budget and sync tests (no
#    side environments): compiled kernels against the reference, every dtype and layout; then
#    FastVID's kernels against its reference;
#    and the adapters' timing record with CUDA events (tests/test_timing.py on a tiny Qwen2-VL);
# 2. bench/bench_gpu.py: every method against its bandwidth floor, eager and CUDA-graph replay of
#    every sized path (each also run once under torch.cuda.set_sync_debug_mode("error")), vLLM's
#    own function where vLLM is installed;
# 3. bench/bench_stages.py: every stage of every backend on its own.
# The figures go to OUT_DIR (device.txt, pytest.log, results_gpu.csv, RESULTS.md with the tables,
# stages.txt). Exit status: non-zero when any step fails (a mismatch, a sync, a replay that
# differs) or runs out of its time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/device_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
status=0
step() {  # step NAME SECONDS CMD...: run with a time limit, log to OUT/NAME.log, remember failures
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
    tail -n 5 "$OUT/$name.log"
}
: > "$OUT/summary.txt"
python - > "$OUT/device.txt" 2>&1 <<'PY' || { cat "$OUT/device.txt"; echo "no CUDA device"; exit 2; }
import torch, triton
assert torch.cuda.is_available(), "torch sees no CUDA device"
p = torch.cuda.get_device_properties(0)
print(f"device {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, sm_{p.major}{p.minor}")
print(f"torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}")
PY
cat "$OUT/device.txt"
TESTS="tests/test_compress.py tests/test_select_channels.py tests/test_token_scores.py tests/test_frame_budgets.py
tests/test_select_tokens.py tests/test_gather_rows.py tests/test_attention_row.py tests/test_dycoke.py
tests/test_syncs.py tests/test_launches.py tests/test_api.py"
# shellcheck disable=SC2086
step pytest 250 python -m pytest --device=cuda -q -p no:cacheprovider -x $TESTS \
    -m "not lmms_eval and not vllm and not transformers_versions"
# FastVID's four Triton kernels (DPC distances and deltas, assignments, merge) against the reference
step fastvid 60 python -m pytest --device=cuda -q -p no:cacheprovider -x tests/test_fastvid.py \
    -k "backends_match or exact_counts or strided or nonfinite"
# HoliTom's two scorer kernels and its torch merge on CUDA against the reference; its placeholders are
# CUDA's own torch.linspace (float32 steps), read back once
step holitom 40 python -m pytest --device=cuda -q -p no:cacheprovider -x tests/test_holitom.py tests/test_syncs.py \
    -k "holitom and (backends_match or strided or nonfinite or sync)"
# the timing record's CUDA events: parts add up to the call, peak memory read
step timing 30 python -m pytest -q -p no:cacheprovider -x tests/test_timing.py -k cuda
step bench_gpu 150 python bench/bench_gpu.py --csv "$OUT/results_gpu.csv" --results "$OUT/RESULTS.md" --repeats 20
step bench_stages 50 python bench/bench_stages.py --csv "$OUT/stages.csv" --results "$OUT/RESULTS.md"
cp "$OUT/bench_stages.log" "$OUT/stages.txt" 2>/dev/null
echo "device check: $([ $status -eq 0 ] && echo passed || echo FAILED); figures in $OUT"
exit $status
