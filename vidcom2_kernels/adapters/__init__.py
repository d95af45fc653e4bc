"""VidCom2 (and DyCoke) for transformers' video LLMs: Qwen2-VL, Qwen2.5-VL, Qwen3-VL(-MoE),
Qwen3.5(-MoE), GLM-4.1V/4.5V/4.6V, LLaVA-OneVision, LLaVA-NeXT-Video, Video-LLaVA.

- :func:`apply_vidcom2` / :func:`apply_compression`: after it, ``model.generate(**processor_outputs)``
  compresses every video of the batch; the returned handle's ``remove()`` (or ``with``) restores
  the model exactly.
- :func:`prune_inputs`: the keyword arguments to pass to ``model.generate`` yourself.
- :func:`apply_from_env`: the lmms-eval convention, ``COMPRESSOR=vidcom2 R_RATIO=0.25``.
- :func:`apply_timing`: the same handle without compression, for a baseline; every handle's
  ``timing`` splits the ``generate()`` time (encoder, selection, prefill, decode) and keeps the
  run's peak memory (:mod:`~vidcom2_kernels.adapters.timing`).

Modules: ``settings`` (the options type), ``registry`` (model_type -> adapter), ``base`` (the
pruning steps every family shares), one file per family, ``apply`` (the entry points and the
``generate`` wrapper), ``generation`` (generate()'s contract), ``kv_prune`` (DyCoke's KV pruning),
``patching`` (set and restore attributes), ``timing`` (the timing record), ``lmms_eval`` (the launcher).
All adapters call :func:`vidcom2_kernels.compress`; none has its own copy of the selection.
Supported: transformers 5.17 (precomputed features through a per-thread stand-in for
``get_video_features``) and 5.18+ (``mm_encoder_outputs``).
"""

from .apply import CompressionHandle, apply_compression, apply_from_env, apply_timing, apply_vidcom2, prune_inputs
from .base import Adapter, EncodedVideos, Pruned
from .kv_prune import KVPrune
from .registry import ADAPTERS, FAMILIES, LMMS_EVAL_MODELS, adapter_for
from .settings import Settings, settings_from_env
from .timing import CallTiming, RunTiming

__all__ = [
    "ADAPTERS",
    "Adapter",
    "CallTiming",
    "CompressionHandle",
    "EncodedVideos",
    "FAMILIES",
    "KVPrune",
    "LMMS_EVAL_MODELS",
    "Pruned",
    "RunTiming",
    "Settings",
    "adapter_for",
    "apply_compression",
    "apply_from_env",
    "apply_timing",
    "apply_vidcom2",
    "prune_inputs",
    "settings_from_env",
]
