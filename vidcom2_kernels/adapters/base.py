"""What every model adapter shares: pruning a batch of prompts at the input, before ``generate()``.

The approach (see ADAPTERS.md in the design notes): encode the videos once, choose the kept tokens
with :func:`vidcom2_kernels.compress`, compute the FULL sequence's positions, then drop the pruned
placeholders from ``input_ids`` and the mask, re-left-pad the rows, gather the positions of what is
kept (M-RoPE rows gathered, the text row re-made contiguous), and hand the kept features to
``generate()``: through ``mm_encoder_outputs`` (transformers >= 5.18), or a scoped instance patch
of ``get_video_features`` for older 5.x. ``model.rope_deltas`` is left consistent for manual loops.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass, field
from typing import Optional

import torch

import vidcom2_kernels as vk


@dataclass
class Settings:
    """How to compress: the arguments of :func:`vidcom2_kernels.compress`."""

    retention: float = 0.25
    exact: bool = False
    target: Optional[object] = None
    backend: str = "auto"
    method: str = "vidcom2"
    frame_budgets: Optional[str] = None
    quirks: bool = False

    def compress(self, features, frames, extras=()):
        return vk.compress(
            features, frames, self.retention, exact=self.exact, target=self.target, backend=self.backend,
            extras=extras, method=self.method, frame_budgets=self.frame_budgets, quirks=self.quirks,
        )


@dataclass
class Pruned:
    """Result of :meth:`Adapter.prune`: ``kwargs`` for ``model.generate`` and what was chosen."""

    kwargs: dict
    compression: Optional[vk.Compression]
    video_tokens_before: int = 0
    video_tokens_after: int = 0
    patches: list = field(default_factory=list)  # (obj, name, value) to install while generating


def accepts_encoder_outputs(model) -> bool:
    """transformers >= 5.18 takes precomputed ``mm_encoder_outputs`` in ``forward``."""
    return "mm_encoder_outputs" in inspect.signature(model.forward).parameters


def pad_token_id(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """The id the prompt used for padding (so a re-padded batch is bit-identical when nothing is
    pruned), else the generation config's, else 0."""
    pads = input_ids[attention_mask == 0]
    if pads.numel():
        return int(pads[0])
    pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
    return int(pad) if isinstance(pad, int) else 0


def padding_side(attention_mask: torch.Tensor) -> str:
    """"right" when some row ends in padding, else "left" (also for a batch without padding)."""
    return "right" if bool((attention_mask[:, -1] == 0).any()) else "left"


def repack_rows(drop: torch.Tensor, pad_value: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                rows: dict) -> tuple:
    """Remove the positions ``drop`` (B, L) marks, keeping each row's padding and padding side.

    Row ``b`` loses ``d_b = drop[b].sum()`` positions; every row is padded back to the common width
    ``L - min(d_b)`` on the side the batch is padded on, so a batch where nothing is dropped comes
    back unchanged (bit-identical generation at retention 1.0). ``rows`` maps names to (..., B, L)
    tensors packed the same way (new padding 0). Returns ``(input_ids, attention_mask, rows)``.
    """
    B, L = input_ids.shape
    dropped = drop.sum(dim=1).tolist()
    width = L - (min(dropped) if dropped else 0)
    right = padding_side(attention_mask) == "right"
    new_ids = input_ids.new_full((B, width), pad_value)
    new_mask = attention_mask.new_zeros((B, width))
    new_rows = {k: v.new_zeros((*v.shape[:-2], B, width)) for k, v in rows.items()}
    for b in range(B):
        keep = ~drop[b]
        n = L - dropped[b]
        at = slice(0, n) if right else slice(width - n, width)
        new_ids[b, at] = input_ids[b, keep]
        new_mask[b, at] = attention_mask[b, keep]
        for k, v in rows.items():
            new_rows[k][..., b, at] = v[..., b, :][..., keep]
    return new_ids, new_mask, new_rows


class Adapter:
    """One model family. Subclasses say how videos are encoded, split into frames, and placed."""

    # model_type -> name of the transformers class of that model_type this adapter drives
    model_classes: dict = {}

    # -------------------------------------------------------------------------------- hooks
    def video_token_id(self, model) -> int:
        return model.config.video_token_id

    def encode_videos(self, model, inputs: dict, get_video_features=None):
        """Encode with ``get_video_features`` (default: the model's own). Returns ``(encoder_output,
        features (N, C), frames [(F, T)], extras, tail)``: the raw encoder output, the scored tokens
        of all videos concatenated, their layout, row-aligned tensors to gather alike, and per video
        the count of tokens always kept after it (LLaVA-OneVision's newline)."""
        raise NotImplementedError

    def full_positions(self, model, inputs: dict) -> Optional[torch.Tensor]:
        """(3, B, L) M-RoPE positions of the unpruned sequence (gathered for the kept tokens), or
        None for 1-D positions (generate() re-makes them contiguous)."""
        return None

    def kept_encoder_output(self, encoder_output, compression, frames, tail):
        """The encoder output restricted to the kept tokens, in the form ``forward`` expects."""
        raise NotImplementedError

    def check_inputs(self, model, inputs: dict) -> None:
        """Raise a clear ValueError when the inputs do not match their grids."""

    # -------------------------------------------------------------------------------- pipeline
    def has_video(self, inputs: dict) -> bool:
        return inputs.get("pixel_values_videos") is not None

    @torch.no_grad()
    def prune(self, model, inputs: dict, settings: Settings) -> Pruned:
        inputs = dict(inputs)
        if not self.has_video(inputs):
            return Pruned(inputs, None)
        input_ids = inputs.get("input_ids")
        if input_ids is None:
            raise ValueError("VidCom2 adapters prune input_ids: pass the processor's input_ids, not inputs_embeds")
        self.check_inputs(model, inputs)
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        encoder_output, features, frames, extras, tail = self.encode_videos(model, inputs)
        comp = settings.compress(features, frames, extras=extras)

        # which sequence positions survive: all real (unpadded) tokens, video placeholders per the mask
        is_video = input_ids == self.video_token_id(model)
        video_keep = self.placeholder_keep(comp.mask, frames, tail)
        if int(is_video.sum()) != video_keep.numel():
            raise ValueError(
                f"the prompt has {int(is_video.sum())} video placeholder tokens but the videos have "
                f"{video_keep.numel()} tokens: input_ids do not match the video grids"
            )
        drop = torch.zeros_like(is_video)
        drop[is_video] = ~video_keep.to(drop.device)

        rows = {}
        positions = self.full_positions(model, {**inputs, "attention_mask": attention_mask})
        if positions is not None:
            rows["positions"] = positions
        if inputs.get("mm_token_type_ids") is not None:
            rows["mm_token_type_ids"] = inputs["mm_token_type_ids"]
        new_ids, new_mask, new_rows = repack_rows(
            drop, pad_token_id(model, input_ids, attention_mask), input_ids, attention_mask, rows
        )
        out = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "position_ids")}
        out["input_ids"], out["attention_mask"] = new_ids, new_mask
        if "mm_token_type_ids" in new_rows:
            out["mm_token_type_ids"] = new_rows["mm_token_type_ids"]
        if positions is not None:
            # row 0: text positions, contiguous over the kept tokens (what generate() would build)
            text = (new_mask.cumsum(-1) - 1).masked_fill(new_mask == 0, 0)
            out["position_ids"] = torch.cat([text[None], new_rows["positions"]], dim=0)
            max_pos = new_rows["positions"].amax(dim=(0, 2))
            model.model.rope_deltas = (max_pos + 1 - new_mask.sum(dim=1))[:, None]

        kept = self.kept_encoder_output(encoder_output, comp, frames, tail)
        pruned = Pruned(out, comp, video_tokens_before=int(is_video.sum()), video_tokens_after=int(video_keep.sum()))
        if accepts_encoder_outputs(model):
            for key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
                out.pop(key, None)
            out["mm_encoder_outputs"] = {**(out.get("mm_encoder_outputs") or {}), "video": kept}
        else:  # transformers 5.12-5.17: forward re-encodes; answer it with the compressed features
            pruned.patches.append((model.model, "get_video_features", self.compressing_encoder(model, settings)))
        return pruned

    def placeholder_keep(self, mask: torch.Tensor, frames, tail) -> torch.Tensor:
        """Keep flags of every video placeholder, videos in order: the selection, then ``tail[v]``
        always-kept tokens (e.g. LLaVA-OneVision's newline) after each video."""
        if not any(tail):
            return mask
        parts, start = [], 0
        for (F, T), extra in zip(frames, tail):
            parts += [mask[start : start + F * T], mask.new_ones(extra)]
            start += F * T
        return torch.cat(parts)

    def compressing_encoder(self, model, settings: Settings):
        """A stand-in for ``model.model.get_video_features`` that returns only the kept tokens.
        It recompresses whatever it encodes (selection is deterministic per video), so batches
        expanded for beams or several return sequences stay aligned with the pruned prompts."""
        original = model.model.get_video_features

        @functools.wraps(original)
        def get_video_features(*args, **kwargs):
            inputs = dict(zip(("pixel_values_videos", "video_grid_thw"), args))
            inputs.update(kwargs)
            encoder_output, features, frames, extras, tail = self.encode_videos(model, inputs, original)
            comp = settings.compress(features, frames, extras=extras)
            return self.kept_encoder_output(encoder_output, comp, frames, tail)

        return get_video_features


@contextlib.contextmanager
def installed(patches):
    """Set attributes for the duration of a call, then restore them exactly."""
    saved = []
    try:
        for obj, name, value in patches:
            saved.append((obj, name, obj.__dict__.get(name, _MISSING)))
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, before in reversed(saved):
            if before is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, before)


_MISSING = object()
