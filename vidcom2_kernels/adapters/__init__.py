"""VidCom2 for transformers' video LLMs: Qwen2-VL, Qwen2.5-VL, Qwen3-VL(-MoE), Qwen3.5(-MoE),
LLaVA-OneVision.

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

from ..records import FRAME_BUDGETS, METHODS
from .base import Adapter, Pruned, Settings, installed
from .generation import PromptStreamer, bind_generate_call, shift_length_limits, with_caller_prompt
from .kv_prune import KVPrune, kv_pruning
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_5_vl import Qwen25VLAdapter
from .qwen2_vl import Qwen2VLAdapter
from .qwen3_5 import Qwen35Adapter
from .qwen3_vl import Qwen3VLAdapter

FAMILIES = (Qwen2VLAdapter, Qwen25VLAdapter, Qwen3VLAdapter, Qwen35Adapter, LlavaOnevisionAdapter)
# model_type -> adapter class: the one registry (the lmms-eval launcher asks it about the model it loaded)
ADAPTERS = {model_type: cls for cls in FAMILIES for model_type in cls.model_classes}


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
    for ``model.generate``: pruned ``input_ids`` and ``attention_mask`` (each row's padding kept,
    rows padded back to a common width), ``position_ids`` of the kept tokens, and the kept features
    in the form the installed transformers takes (``mm_encoder_outputs`` on 5.18+). The rows
    ``generate`` returns from these start with the *pruned* prompt: slice the answers at
    ``kwargs["input_ids"].shape[1]`` (:func:`apply_compression` gives back the caller's rows instead).
    On transformers < 5.18 use :func:`apply_compression`, which also installs the encoder patch
    those versions need."""
    settings = Settings(retention, exact, target, backend, method, frame_budgets, quirks)
    pruned = adapter_for(model).prune(model, dict(inputs), settings)
    if pruned.patches:
        raise RuntimeError(
            "this transformers version re-encodes videos inside forward: use apply_vidcom2(model) "
            "(or apply_compression) so the encoder can be patched for the call"
        )
    return pruned.kwargs


class CompressionHandle:
    """Undo handle of :func:`apply_compression`; also a context manager. While applied,
    ``model.generate`` prunes every video of a call and keeps transformers' contract (rows =
    the caller's ``input_ids`` + the new tokens). ``last`` is the latest call's
    :class:`~vidcom2_kernels.adapters.base.Pruned`; ``calls``, ``failures`` and
    ``video_tokens_before`` / ``video_tokens_after`` are running totals over calls with video."""

    def __init__(self, model, settings: Settings, kv: KVPrune | None = None):
        self.model, self.settings, self.kv, self.last, self.kv_state = model, settings, kv, None, None
        self.calls = self.failures = self.video_tokens_before = self.video_tokens_after = 0
        self.adapter = adapter_for(model)
        self.original = model.generate

        @functools.wraps(self.original)
        def generate(*args, **kwargs):
            try:
                return self.generate(*args, **kwargs)
            except Exception:
                self.failures += 1
                raise

        generate.vidcom2_handle = self
        model.generate = generate
        self.active = True

    def generate(self, *args, **kwargs):
        """The wrapped call: prune, run the model's own ``generate`` on the pruned prompt, and
        return its output with the caller's prompt rows in front of the new tokens."""
        named, model_inputs = bind_generate_call(self.original, args, kwargs)
        self.last = self.adapter.prune(self.model, model_inputs, self.settings)
        pruned = self.last.kwargs
        if self.last.compression is not None:  # the prompt changed: translate the call's lengths and streamer
            self.calls += 1
            self.video_tokens_before += self.last.video_tokens_before
            self.video_tokens_after += self.last.video_tokens_after
            prompt, pruned_width = model_inputs["input_ids"], pruned["input_ids"].shape[1]
            configs = [named.get("generation_config"), getattr(self.model, "generation_config", None)]
            pruned = shift_length_limits(pruned, configs, prompt.shape[1] - pruned_width)
            if named.get("streamer") is not None:
                named["streamer"] = PromptStreamer(named["streamer"], prompt)
        with contextlib.ExitStack() as stack:
            stack.enter_context(installed(self.last.patches))
            ids = pruned.get("input_ids")
            if self.kv is not None and ids is not None:
                visual = ids == self.adapter.video_token_id(self.model)
                self.kv_state = stack.enter_context(kv_pruning(self.model, self.kv, visual, self.settings.backend))
            output = self.original(**named, **pruned)
        if self.last.compression is None:
            return output
        return with_caller_prompt(output, prompt, pruned_width)

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


ENV_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False, "": False}


def settings_from_env(environ=None) -> dict | None:
    """The lmms-eval convention read from the environment, checked: ``COMPRESSOR=vidcom2`` or
    ``dycoke`` (unset or ``none``: None, no compression), ``R_RATIO`` (retention in (0, 1],
    default 0.25; for DyCoke the kept fraction ``1 - p`` of pruned frames), ``VIDCOM2_EXACT``
    (1/true/yes/on for exact counts), ``FRAME_BUDGETS=vidcom2`` (VidCom2's frame budgets over
    DyCoke). Returns the keyword arguments of :func:`apply_compression`; a ValueError names the
    variable that is wrong."""
    env = os.environ if environ is None else environ
    method = env.get("COMPRESSOR", "").strip().lower()
    if method in ("", "none"):
        return None
    if method not in METHODS:
        raise ValueError(f"COMPRESSOR must be one of {', '.join(METHODS)} or none, got {env['COMPRESSOR']!r}")
    text = env.get("R_RATIO", "0.25")
    try:
        retention = float(text)
    except ValueError:
        retention = float("nan")
    if not 0.0 < retention <= 1.0:
        raise ValueError(f"R_RATIO must be a number in (0, 1], got {text!r}")
    exact = env.get("VIDCOM2_EXACT", "0").strip().lower()
    if exact not in ENV_FLAGS:
        raise ValueError(f"VIDCOM2_EXACT must be 1/true/yes/on or 0/false/no/off, got {env['VIDCOM2_EXACT']!r}")
    frame_budgets = env.get("FRAME_BUDGETS", "").strip().lower() or None
    if frame_budgets not in FRAME_BUDGETS:
        raise ValueError(f"FRAME_BUDGETS must be unset or one of {', '.join(f for f in FRAME_BUDGETS if f)}, "
                         f"got {env['FRAME_BUDGETS']!r}")
    return dict(method=method, retention=retention, exact=ENV_FLAGS[exact], frame_budgets=frame_budgets)


def apply_from_env(model, environ=None):
    """Apply the compression :func:`settings_from_env` reads (the lmms-eval convention,
    ``COMPRESSOR=vidcom2 R_RATIO=0.25``) to ``model``. Returns the handle, or None when
    ``COMPRESSOR`` is unset or ``none``."""
    settings = settings_from_env(environ)
    return None if settings is None else apply_compression(model, **settings)


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
    "settings_from_env",
]
