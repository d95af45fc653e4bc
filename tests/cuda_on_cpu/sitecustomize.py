"""Test scaffolding, on ``PYTHONPATH`` only for the lmms-eval runs of ``qwen3_omni``
(tests/test_lmms_eval.py): lmms-eval 0.7.3's Qwen3-Omni classes move their inputs with
``inputs.to("cuda")`` whatever device they were given (with ``device_map=auto``; any other
device_map loads the model on ``cuda:N``), so on a machine without a GPU plain lmms-eval records an
empty answer for every request. Here that one call, ``BatchFeature.to`` to a CUDA device while
none is present, moves to the CPU instead; nothing else changes."""

import torch
from transformers.feature_extraction_utils import BatchFeature

_to = BatchFeature.to


def _to_cpu_for_cuda(self, *args, **kwargs):
    """``BatchFeature.to`` with a CUDA device read as the CPU (no GPU here)."""
    if args and isinstance(args[0], (str, torch.device)) and torch.device(args[0]).type == "cuda":
        args = ("cpu", *args[1:])
    return _to(self, *args, **kwargs)


if not torch.cuda.is_available():
    BatchFeature.to = _to_cpu_for_cuda
