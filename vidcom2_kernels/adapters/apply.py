"""Compressing the videos a transformers video LLM sees, keeping ``generate()``'s contract.

- :func:`prune_inputs`: the keyword arguments to pass to ``model.generate`` yourself.
- :class:`CompressionHandle`: what :func:`apply_compression` installs on ``model.generate``;
  :func:`apply_timing` installs it without compression, to time a baseline the same way.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
from dataclasses import asdict
from typing import Optional

import torch

from .base import Pruned, accepts_encoder_outputs
from .generation import PromptStreamer, bind_generate_call, shift_length_limits, with_caller_prompt
from .kv_prune import KVPrune, kv_pruning
from .patching import install
from .registry import adapter_for
from .settings import Settings, settings_from_env
from .timing import CallTiming, EncoderHook, PrefillMarker, Stopwatch, new_tokens


def prune_inputs(model, inputs, retention: float = 0.25, **options) -> dict:
    """Compress the videos of ``inputs`` (the processor's output) and return the keyword arguments
    for ``model.generate``: pruned ``input_ids`` and ``attention_mask`` (each row's padding kept,
    rows padded back to a common width), ``position_ids`` of the kept tokens, and the kept features
    in the form the installed transformers takes (``mm_encoder_outputs`` on 5.18+). The rows
    ``generate`` returns from these start with the *pruned* prompt: slice the answers at
    ``kwargs["input_ids"].shape[1]`` (:func:`apply_compression` gives back the caller's rows instead).
    On transformers < 5.18 use :func:`apply_compression`, which also installs the encoder patch
    those versions need. ``options``: the other fields of :class:`Settings` (``method``, ``exact``,
    ``target``, ``backend``, ``frame_budgets``, ``quirks``)."""
    settings, adapter = Settings(retention=retention, **options), adapter_for(model)
    if adapter.has_video(inputs) and not accepts_encoder_outputs(adapter.step_model(model)):
        raise RuntimeError(
            "this transformers version re-encodes videos inside forward: use apply_vidcom2(model) "
            "(or apply_compression) so the encoder can be patched for the call"
        )
    return adapter.prune(model, dict(inputs), settings).kwargs


class CompressionHandle:
    """Undo handle of :func:`apply_compression` (and of :func:`apply_timing`, which times without
    compressing: ``settings`` None); also a context manager. While applied, ``model.generate``
    prunes every video of a call and keeps transformers' contract (rows = the caller's
    ``input_ids`` + the new tokens). ``last`` is the latest call's
    :class:`~vidcom2_kernels.adapters.base.Pruned`; ``calls``, ``failures`` and
    ``video_tokens_before`` / ``video_tokens_after`` are running totals over calls with video.
    ``timing`` (:class:`~vidcom2_kernels.adapters.timing.RunTiming`) totals every call's time split
    (encoder, selection, prefill, decode) and the run's peak memory since the handle was applied
    (``reset_timing()`` starts a new run); ``last_timing`` is the latest call's
    :class:`~vidcom2_kernels.adapters.timing.CallTiming`."""

    def __init__(self, model, settings: Optional[Settings], kv: KVPrune | None = None):
        self.model, self.settings, self.kv, self.last, self.kv_state = model, settings, kv, None, None
        self.calls = self.failures = self.video_tokens_before = self.video_tokens_after = 0
        self.adapter = adapter_for(model)
        self.original = model.generate
        self.active = True
        self.stopwatch = Stopwatch(getattr(model, "device", torch.device("cpu")))
        self.wrapper = CompressedGenerate(self)
        self.undo = install([(model, "generate", self.wrapper)])
        self.encoder, self.encoder_undo = None, None
        owner, name = self.adapter.inner_model(model), self.adapter.encoder_name
        if callable(getattr(owner, name, None)):  # else encoding counts as prefill
            self.encoder = EncoderHook(owner, name, self.stopwatch)
            self.encoder_undo = install([(owner, name, self.encoder)])

    @property
    def timing(self):
        return self.stopwatch.run

    @property
    def last_timing(self) -> Optional[CallTiming]:
        return self.stopwatch.last

    def reset_timing(self) -> None:
        """Start a new timing run: zero totals, reset the peak memory."""
        self.stopwatch.reset()

    def generate(self, *args, **kwargs):
        """The wrapped call: prune, run the model's own ``generate`` on the pruned prompt, and
        return its output with the caller's prompt rows in front of the new tokens; timed
        (:mod:`~vidcom2_kernels.adapters.timing`)."""
        timeline = self.stopwatch.begin()
        try:
            named, model_inputs = bind_generate_call(self.original, args, kwargs)
            if self.settings is None:  # timing only (its video tokens are counted after the call)
                last = Pruned(model_inputs, None)
            else:
                last = self.adapter.prune(self.model, model_inputs, self.settings)
            self.last = last
            timeline.mark("selected")
            output = self.run_pruned(last, named, model_inputs, timeline)
            timeline.mark("end")
        finally:
            self.stopwatch.end()
        if self.settings is None:
            last.video_tokens_before = last.video_tokens_after = self.video_tokens(model_inputs)
        self.stopwatch.record(self.call_timing(last, timeline, named, model_inputs, output))
        return output

    def run_pruned(self, last: Pruned, named: dict, model_inputs: dict, timeline):
        """The model's own ``generate`` on ``last``'s pruned prompt (the prefill marked on
        ``timeline``); the output's rows start with the caller's prompt."""
        pruned = last.kwargs
        if last.compression is not None:  # the prompt changed: translate the call's lengths and streamer
            self.calls += 1
            self.video_tokens_before += last.video_tokens_before
            self.video_tokens_after += last.video_tokens_after
            prompt, pruned_width = model_inputs["input_ids"], pruned["input_ids"].shape[1]
            configs = [named.get("generation_config"), getattr(self.model, "generation_config", None)]
            pruned = shift_length_limits(pruned, configs, prompt.shape[1] - pruned_width)
            if named.get("streamer") is not None:
                named["streamer"] = PromptStreamer(named["streamer"], prompt)
        with contextlib.ExitStack() as stack:
            if last.encoder is not None:  # transformers < 5.18: the call's stand-in encoder
                stack.enter_context(self.encoder.replaced(last.encoder))
            ids = pruned.get("input_ids")
            if self.kv is not None and ids is not None:
                visual = self.adapter.video_placeholders(self.model, pruned)
                self.kv_state = stack.enter_context(kv_pruning(self.model, self.kv, visual, self.settings.backend))
            marker = PrefillMarker(
                self.adapter.step_model(self.model), timeline, ids.shape[-1] if ids is not None else 0
            )
            stack.callback(marker.remove)
            output = self.original(**named, **pruned)
        if last.compression is None:
            return output
        return with_caller_prompt(output, prompt, pruned_width)

    def video_tokens(self, inputs: dict) -> int:
        """The video placeholders of a prompt (0 without video)."""
        if inputs.get("input_ids") is None or not self.adapter.has_video(inputs):
            return 0
        return int(self.adapter.video_placeholders(self.model, inputs).sum())

    def call_timing(self, last: Pruned, timeline, named: dict, model_inputs: dict, output) -> CallTiming:
        """The record of a finished call (reads its CUDA events and counts its new tokens)."""
        ids, pruned = model_inputs.get("input_ids"), last.kwargs
        sequences = output if isinstance(output, torch.Tensor) else getattr(output, "sequences", None)
        width = ids.shape[-1] if ids is not None else 0
        mask = pruned.get("attention_mask")
        if mask is None:  # no mask: every prompt position is a token (none without input_ids)
            mask = torch.ones_like(pruned["input_ids"]) if ids is not None else torch.zeros(0)
        configs = [named.get("generation_config"), getattr(self.model, "generation_config", None)]
        sources = [model_inputs, *(vars(c) for c in configs if c is not None)]  # transformers' precedence
        eos = next((s["eos_token_id"] for s in sources if s.get("eos_token_id") is not None), None)
        return CallTiming(
            **timeline.parts(),
            samples=ids.shape[0] if ids is not None else 0,
            prompt_tokens=int(mask.sum()),
            video_tokens_before=last.video_tokens_before,
            video_tokens_after=last.video_tokens_after,
            new_tokens=new_tokens(sequences, width, eos) if sequences is not None else 0,
        )

    def remove(self) -> None:
        """Restore ``model.generate`` exactly (a second call does nothing). When something wrapped
        ``model.generate`` after this handle was applied, that wrapper stays, and the compression
        inside it stops (calls go straight to the model's own ``generate``)."""
        self.active = False
        if self.model.__dict__.get("generate") is self.wrapper:
            self.undo()
        if self.encoder is not None and self.encoder.owner.__dict__.get(self.adapter.encoder_name) is self.encoder:
            self.encoder_undo()

    def __deepcopy__(self, memo):
        """``copy.deepcopy`` of the model: the copy's own handle (the same settings, fresh totals,
        no last call), applied to the copy."""
        new = copy.copy(self)
        memo[id(self)] = new
        for name in ("model", "original", "wrapper", "undo", "stopwatch", "encoder", "encoder_undo"):
            setattr(new, name, copy.deepcopy(getattr(self, name), memo))
        new.last = new.kv_state = None
        new.calls = new.failures = new.video_tokens_before = new.video_tokens_after = 0
        return new

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


#: ids of the handles whose ``generate`` runs in this thread: a call made from inside it (transformers'
#: assisted generation calls ``assistant_model.generate``, which may be this model) is not pruned again
_RUNNING = threading.local()


class CompressedGenerate:
    """What ``model.generate`` is while a :class:`CompressionHandle` is applied (``vidcom2_handle``
    names it). A callable object rather than a closure: ``copy.deepcopy(model)`` copies it with
    its handle, so the copy compresses with its own weights and its own handle."""

    def __init__(self, handle: CompressionHandle):
        functools.update_wrapper(self, handle.original)  # generate() inspects its signature
        self.vidcom2_handle = handle  # after: the original's own attributes must not shadow it

    def __call__(self, *args, **kwargs):
        handle = self.vidcom2_handle
        running = _RUNNING.__dict__.setdefault("handles", set())
        if not handle.active or id(handle) in running:
            return handle.original(*args, **kwargs)
        running.add(id(handle))
        try:
            return handle.generate(*args, **kwargs)
        except Exception:
            handle.failures += 1
            raise
        finally:
            running.discard(id(handle))


def apply_compression(
    model, method: str = "vidcom2", retention: float = 0.25, *, kv_prune: KVPrune | None = None, **options
) -> CompressionHandle:
    """Compress every video that ``model.generate`` sees, with ``method`` (a registered method:
    "vidcom2", "dycoke", ...; ``frame_budgets="vidcom2"`` puts VidCom2's frame budgets over the
    token scores of a method with budgets of its own, such as DyCoke);
    ``options``: the other fields of :class:`Settings`. ``kv_prune=KVPrune(ratio, layer, drift)``
    adds DyCoke's decode-time KV-cache pruning (:mod:`vidcom2_kernels.adapters.kv_prune`); it
    works with sdpa, eager and flash-attn."""
    settings = Settings(method=method, retention=retention, **options)
    adapter_for(model)
    if kv_prune is not None:
        kv_prune.check(model)  # unsupported models fail here, with the list of supported ones
    if getattr(getattr(model.generate, "vidcom2_handle", None), "active", False):
        raise RuntimeError("this model already has a compression applied; remove() it first")
    return CompressionHandle(model, settings, kv_prune)


def apply_timing(model) -> CompressionHandle:
    """Time every ``model.generate`` call without compressing anything: the baseline of the same
    record (``handle.timing``, ``handle.last_timing``) a compressing handle keeps."""
    adapter_for(model)
    if getattr(getattr(model.generate, "vidcom2_handle", None), "active", False):
        raise RuntimeError("this model already has a compression applied; remove() it first")
    return CompressionHandle(model, None)


def apply_vidcom2(model, retention: float = 0.25, **options) -> CompressionHandle:
    """VidCom2 on every video ``model.generate`` sees; ``handle.remove()`` restores the model."""
    return apply_compression(model, "vidcom2", retention, **options)


def apply_from_env(model, environ=None):
    """Apply the compression :func:`settings_from_env` reads (the lmms-eval convention,
    ``COMPRESSOR=vidcom2 R_RATIO=0.25``) to ``model``. Returns the handle, or None when
    ``COMPRESSOR`` is unset or ``none``."""
    settings = settings_from_env(environ)
    return None if settings is None else apply_compression(model, **asdict(settings))
