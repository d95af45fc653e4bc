"""VidCom2 for transformers' video LLMs: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision.

- :func:`apply_vidcom2` / :func:`apply_compression`: after it, ``model.generate(**processor_outputs)``
  compresses every video of the batch; the returned handle's ``remove()`` (or ``with``) restores
  the model exactly.
- :func:`prune_inputs`: the keyword arguments to pass to ``model.generate`` yourself.
- :func:`apply_from_env`: the lmms-eval convention, ``COMPRESSOR=vidcom2 R_RATIO=0.25``.

All adapters call :func:`vidcom2_kernels.compress`; none has its own copy of the selection.
Supported: transformers 5.17 (precomputed features through a scoped patch of
``get_video_features``) and 5.18+ (``mm_encoder_outputs``).
"""

from __future__ import annotations

import contextlib
import functools
import os

from ..api import METHODS
from .base import Adapter, Pruned, Settings, installed
from .kv_prune import KVPrune, kv_pruning
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_5_vl import Qwen25VLAdapter
from .qwen2_vl import Qwen2VLAdapter
from .qwen3_vl import Qwen3VLAdapter

ADAPTERS = {t: cls for cls in (Qwen2VLAdapter, Qwen25VLAdapter, Qwen3VLAdapter, LlavaOnevisionAdapter) for t in cls.model_types}


def adapter_for(model) -> Adapter:
    """The adapter registered for ``model.config.model_type``; a clear error otherwise."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTERS:
        raise ValueError(
            f"VidCom2 has no adapter for model_type {model_type!r}; supported: {sorted(ADAPTERS)}"
        )
    return ADAPTERS[model_type]()


def prune_inputs(model, inputs, retention: float = 0.25, *, exact: bool = False, target=None,
                 backend: str = "auto", method: str = "vidcom2", frame_budgets=None, quirks: bool = False) -> dict:
    """Compress the videos of ``inputs`` (the processor's output) and return the keyword arguments
    for ``model.generate``: pruned ``input_ids`` and ``attention_mask`` (re-left-padded),
    ``position_ids`` of the kept tokens, and the kept features in the form the installed
    transformers takes (``mm_encoder_outputs`` on 5.18+). On transformers < 5.18 use
    :func:`apply_vidcom2` instead, which also installs the encoder patch those versions need."""
    settings = Settings(retention, exact, target, backend, method, frame_budgets, quirks)
    pruned = adapter_for(model).prune(model, dict(inputs), settings)
    if pruned.patches:
        raise RuntimeError(
            "this transformers version re-encodes videos inside forward: use apply_vidcom2(model) "
            "(or generate_compressed) so the encoder can be patched for the call"
        )
    return pruned.kwargs


class CompressionHandle:
    """Undo handle of :func:`apply_vidcom2`; also a context manager. ``last`` holds the most recent
    :class:`~vidcom2_kernels.adapters.base.Pruned` (token counts, the Compression)."""

    def __init__(self, model, settings: Settings, kv: KVPrune | None = None):
        self.model, self.settings, self.kv, self.last, self.kv_state = model, settings, kv, None, None
        self.adapter = adapter_for(model)
        original = model.generate

        @functools.wraps(original)
        def generate(*args, **kwargs):
            if args:
                kwargs = {**dict(zip(("input_ids",), args)), **kwargs}
                args = args[1:]
            self.last = self.adapter.prune(model, kwargs, self.settings)
            with contextlib.ExitStack() as stack:
                stack.enter_context(installed(self.last.patches))
                ids = self.last.kwargs.get("input_ids")
                if self.kv is not None and ids is not None:
                    visual = ids == self.adapter.video_token_id(model)
                    self.kv_state = stack.enter_context(kv_pruning(model, self.kv, visual, self.settings.backend))
                return original(*args, **self.last.kwargs)

        generate.vidcom2_handle = self
        model.generate = generate
        self.active = True

    def remove(self) -> None:
        if self.active:
            del self.model.generate  # the instance attribute: the class's generate shows again
            self.active = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def apply_compression(model, method: str = "vidcom2", retention: float = 0.25, *, exact: bool = False,
                      target=None, backend: str = "auto", frame_budgets=None, quirks: bool = False,
                      kv_prune: KVPrune | None = None) -> CompressionHandle:
    """Compress every video that ``model.generate`` sees, with ``method`` ("vidcom2" or "dycoke";
    ``frame_budgets="vidcom2"`` puts VidCom2's frame budgets over DyCoke's token scores).
    ``kv_prune=KVPrune(ratio, layer, drift)`` adds DyCoke's decode-time KV-cache pruning
    (:mod:`vidcom2_kernels.adapters.kv_prune`); it works with sdpa, eager and flash-attn."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    adapter_for(model)  # unsupported models fail here, with the list of supported ones
    if getattr(model.generate, "vidcom2_handle", None) is not None:
        raise RuntimeError("this model already has a compression applied; remove() it first")
    return CompressionHandle(model, Settings(retention, exact, target, backend, method, frame_budgets, quirks), kv_prune)


def apply_vidcom2(model, retention: float = 0.25, *, exact: bool = False, backend: str = "auto") -> CompressionHandle:
    """VidCom2 on every video ``model.generate`` sees; ``handle.remove()`` restores the model."""
    return apply_compression(model, "vidcom2", retention, exact=exact, backend=backend)


def apply_from_env(model):
    """The lmms-eval convention: ``COMPRESSOR=vidcom2`` or ``dycoke`` (unset or ``none``: nothing),
    ``R_RATIO`` (retention, default 0.25; for DyCoke the kept fraction ``1 - p`` of pruned
    frames), ``VIDCOM2_EXACT=1`` for exact counts, ``FRAME_BUDGETS=vidcom2`` to put VidCom2's frame
    budgets over DyCoke. Returns the handle or None."""
    method = os.environ.get("COMPRESSOR", "").strip().lower()
    if method in ("", "none"):
        return None
    retention = float(os.environ.get("R_RATIO", "0.25"))
    exact = os.environ.get("VIDCOM2_EXACT", "0") == "1"
    frame_budgets = os.environ.get("FRAME_BUDGETS") or None
    return apply_compression(model, method, retention, exact=exact, frame_budgets=frame_budgets)


__all__ = [
    "ADAPTERS",
    "Adapter",
    "KVPrune",
    "CompressionHandle",
    "Pruned",
    "adapter_for",
    "apply_compression",
    "apply_from_env",
    "apply_vidcom2",
    "prune_inputs",
]
