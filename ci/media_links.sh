#!/usr/bin/env bash
# What the media packages need from outside Python, made inside a venv (ci/lmms_eval_media_env.sh,
# ci/check_latest.sh): torchcodec loads FFmpeg's shared libraries by their standard names
# (libavcodec.so.61, ...), which this machine lacks, so VENV/ffmpeg names the FFmpeg libraries of
# PyAV's wheel that way, and a process with LD_LIBRARY_PATH=VENV/ffmpeg decodes with torchcodec;
# audioread (qwen-omni-utils reads a video's audio with it) runs a program called ffmpeg, so
# VENV/bin/ffmpeg is imageio-ffmpeg's. Then checks both on the sample clip.
# Usage: bash ci/media_links.sh VENV
set -euo pipefail
venv=${1:?usage: ci/media_links.sh VENV}
py=$venv/bin/python
av_libs=$("$py" -c "import av, os; print(os.path.join(os.path.dirname(os.path.dirname(av.__file__)), 'av.libs'))")
mkdir -p "$venv/ffmpeg"
# every library of the wheel is linked: one loaded through a link finds its own dependencies in the
# link's folder ($ORIGIN)
for lib in "$av_libs"/*; do
  ln -sf "$lib" "$venv/ffmpeg/"
  base=${lib##*/}
  case $base in
    libavutil-* | libavcodec-* | libavformat-* | libavdevice-* | libavfilter-* | libswscale-* | libswresample-*)
      major=$(echo "$base" | sed -E 's/.*\.so\.([0-9]+).*/\1/')
      ln -sf "$lib" "$venv/ffmpeg/${base%%-*}.so.$major"
      ;;
  esac
done
ln -sf "$("$py" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" "$venv/bin/ffmpeg"
LD_LIBRARY_PATH="$venv/ffmpeg" PATH="$venv/bin:$PATH" "$py" -W ignore::FutureWarning -c "
import audioread, librosa, moviepy, qwen_omni_utils
from transformers.utils.import_utils import is_torchcodec_usable
from vidcom2_kernels.video import sample_clip_path
assert is_torchcodec_usable(decode='video'), 'torchcodec cannot load FFmpeg'
librosa.load(audioread.ffdec.FFmpegAudioFile(sample_clip_path()), sr=16000, duration=0.5)
"
