"""Keeping transformers' ``generate()`` contract while the prompt it runs on is pruned.

A caller of ``generate(input_ids=ids, ...)`` gets rows that start with ``ids`` (its own rows,
padding included, repeated ``num_return_sequences`` / beam-count times as transformers repeats
them), followed by the new tokens; lmms-eval and most client code decode ``out[:, ids.shape[1]:]``.
The model itself runs on the pruned prompt; these helpers translate the call going in and the
result coming out:

- :func:`bind_generate_call`: the caller's positional and keyword arguments as transformers' own
  signature reads them (``generate(ids, generation_config)`` included);
- :func:`shift_length_limits`: ``max_length`` / ``min_length`` count the prompt, so a prompt ``d``
  tokens shorter stops ``d`` tokens earlier and generates the same number of new tokens;
- :class:`PromptStreamer`: a streamer's first ``put`` (the prompt) carries the caller's rows;
- :func:`with_caller_prompt`: ``sequences`` rebuilt as the caller's rows + the new tokens
  (``scores``, ``logits``, caches and the rest of a ``return_dict_in_generate`` output untouched).
"""

from __future__ import annotations

import inspect

import torch
from transformers import GenerationMixin

#: the parameters of transformers' own ``generate()`` (``generation_config``, ``streamer``, ...); a
#: model whose ``generate`` adds parameters of its own (Qwen2.5-Omni: ``input_ids``,
#: ``use_audio_in_video``, ``speaker``, ...) gets those back with its model inputs
GENERATE_PARAMETERS = frozenset(inspect.signature(GenerationMixin.generate).parameters) - {"self", "kwargs"}
LENGTH_LIMITS = (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens"))


def bind_generate_call(generate, args: tuple, kwargs: dict) -> tuple[dict, dict]:
    """Split a call of ``generate`` into ``(named, model_inputs)``: the parameters of transformers'
    own ``generate`` that were given (``generation_config``, ``streamer``, ...) and the model inputs
    (``input_ids``, ``pixel_values_videos``, ..., generation keywords such as ``max_new_tokens``,
    and the parameters a model's own ``generate`` adds, such as Qwen2.5-Omni's ``input_ids`` and
    ``use_audio_in_video``). A positional ``inputs`` becomes ``input_ids`` unless ``input_ids`` is
    given too (then both go through, and transformers raises its own error)."""
    signature = inspect.signature(generate)
    bound = signature.bind_partial(*args, **kwargs)
    named, model_inputs = {}, {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            model_inputs.update(value)
        elif name in GENERATE_PARAMETERS:
            named[name] = value
        else:
            model_inputs[name] = value
    if named.get("inputs") is not None and "input_ids" not in model_inputs:
        model_inputs["input_ids"] = named.pop("inputs")
    return named, model_inputs


def shift_length_limits(kwargs: dict, configs: list, shrink: int) -> dict:
    """``kwargs`` with ``max_length`` / ``min_length`` lowered by ``shrink`` (the tokens pruned from
    every row) wherever one of them, not its ``*_new_tokens`` twin, bounds the generation. The value
    is read with transformers' precedence: the call's keywords, then each of ``configs`` (the
    ``generation_config`` passed, then the model's)."""
    if shrink == 0:
        return kwargs
    out = dict(kwargs)
    for total, new in LENGTH_LIMITS:
        sources = [kwargs, *(vars(c) for c in configs if c is not None)]
        if any(s.get(new) is not None for s in sources):
            continue
        value = next((s[total] for s in sources if s.get(total) is not None), None)
        if value is not None:
            out[total] = max(int(value) - shrink, 0)
    return out


class PromptStreamer:
    """Wraps the caller's streamer so that its first ``put`` (transformers sends the prompt first,
    one row per returned sequence) carries the caller's rows instead of the pruned ones."""

    def __init__(self, streamer, prompt: torch.Tensor):
        self.streamer, self.prompt = streamer, prompt

    def put(self, value):
        if self.prompt is not None:
            value, self.prompt = expand_rows(self.prompt, value.shape[0]).to(value.device), None
        self.streamer.put(value)

    def end(self):
        self.streamer.end()


def expand_rows(prompt: torch.Tensor, rows: int) -> torch.Tensor:
    """(B, L) -> (rows, L), each row repeated ``rows // B`` times in place (transformers' expansion
    for beams and ``num_return_sequences``)."""
    if rows % prompt.shape[0]:
        raise RuntimeError(f"generate() returned {rows} rows for a batch of {prompt.shape[0]}")
    return prompt.repeat_interleave(rows // prompt.shape[0], dim=0)


def with_caller_prompt(output, prompt: torch.Tensor, pruned_width: int):
    """``generate()``'s output with every row's pruned prompt (its first ``pruned_width`` columns)
    replaced by the caller's ``prompt`` (B, L) row. Works on a tensor or a ``GenerateOutput``."""
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    restored = torch.cat(
        [expand_rows(prompt, sequences.shape[0]).to(sequences.device, sequences.dtype), sequences[:, pruned_width:]],
        dim=1,
    )
    if isinstance(output, torch.Tensor):
        return restored
    output.sequences = restored
    return output
