#!/usr/bin/env bash
# A side virtualenv over the lmms-eval one (ci/lmms_eval_env.sh, built first) with the media
# packages two of lmms-eval's models need beyond it (tests/test_lmms_eval.py): torchcodec for
# gemma4 (transformers' video processors decode a file with it) and librosa, moviepy and
# qwen-omni-utils for qwen3_omni, with what they need that the lmms-eval environment lacks or holds
# at a version they refuse, at their versions in ci/locks/lmms-eval-media.txt (ci/side_env.sh). It
# sees the lmms-eval environment's packages after its own. Its processes run with
# LD_LIBRARY_PATH=VENV/ffmpeg and VENV/bin on PATH (FFmpeg for torchcodec, an ffmpeg program for
# audioread: ci/media_links.sh makes both). Idempotent.
# Usage: bash ci/lmms_eval_media_env.sh [--resolve] [VENV]   (default .venvs/lmms-eval-media;
# prints the venv's python; --resolve: from ci/locks/lmms-eval-media.in, the lmms-eval lock
# constraining every package it does not name, writing the lock, as ci/lock.sh does)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/side_env.sh
parent_python=$(bash ci/lmms_eval_env.sh | tail -n 1)
side_env_args lmms-eval-media "$@"
side_env_reused ci/locks/lmms-eval.txt ci/lmms_eval_env.sh ci/media_links.sh && exit 0
side_env_over "$parent_python"
if [ "$resolve" = 1 ]; then
  named=$(grep -v '^#' "$inputs" | sed -E 's/[<>=!~ ;].*//' | paste -sd'|')
  grep -v '^#' ci/locks/lmms-eval.txt | grep -viE "^($named)==" > "$venv/constraints.txt"
  side_env_pip -c "$venv/constraints.txt" -r "$inputs"
else
  side_env_install_lock
fi
bash ci/media_links.sh "$venv"
side_env_finish "$own"
