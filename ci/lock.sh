#!/usr/bin/env bash
# Regenerate the locks of the side environments (ci/locks/NAME.txt) from their inputs
# (ci/locks/NAME.in): each environment is resolved afresh in a throwaway venv by its own script
# with --resolve, and its lock written from what was installed. Commit the locks it changes, after
# the tests pass on them. Not run by CI: CI installs the committed locks.
# lmms-eval-media is resolved over the committed lmms-eval lock: regenerate and commit that first.
# Usage: bash ci/lock.sh [lmms-eval] [lmms-eval-media] [vllm] [timm] [transformers-VERSION]
# (default: all five)
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for name in "${@:-lmms-eval lmms-eval-media vllm timm transformers-5.17.0}"; do
  for one in $name; do
    echo "== $one" >&2
    case $one in
      lmms-eval) bash ci/lmms_eval_env.sh --resolve "$scratch/$one" > /dev/null ;;
      lmms-eval-media) bash ci/lmms_eval_media_env.sh --resolve "$scratch/$one" > /dev/null ;;
      vllm) bash ci/vllm_env.sh --resolve "$scratch/$one" > /dev/null ;;
      timm) bash ci/timm_env.sh --resolve "$scratch/$one" > /dev/null ;;
      transformers-*) bash ci/transformers_env.sh --resolve "${one#transformers-}" "$scratch/$one" > /dev/null ;;
      *) echo "ci/lock.sh: unknown environment $one (lmms-eval, lmms-eval-media, vllm, timm, transformers-VERSION)" >&2; exit 2 ;;
    esac
  done
done
