"""What every model adapter shares: pruning a batch of prompts at the input, before ``generate()``.

The approach (see ADAPTERS.md in the design notes), :meth:`Adapter.prune` step by step:
1. encode the videos once (:meth:`Adapter.encode_videos` -> :class:`EncodedVideos`);
2. choose the kept tokens with :func:`vidcom2_kernels.compress`;
3. mark the video placeholders to drop (:meth:`Adapter.dropped_positions`);
4. drop them from ``input_ids``, the mask and the FULL sequence's positions, keeping each row's
   padding (:func:`repack_rows`; M-RoPE rows gathered, the text row re-made contiguous), and set
   the model's ``rope_deltas`` so decoding continues from the kept positions;
5. hand the kept features to ``generate()``: through ``mm_encoder_outputs`` (transformers >= 5.18),
   or, for older 5.x, a stand-in for ``get_video_features`` during the call (:attr:`Pruned.encoder`,
   which the handle's encoder hook calls in this thread only).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..records import Compression
from .settings import Settings

#: the video inputs that the kept features replace in ``forward`` (VideoLLaMA3's compression mask
#: and Molmo2's pooling indices address every encoder token, so they go too)
VIDEO_INPUTS = (
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
    "video_second_per_grid",
    "video_compression_mask",
    "video_token_pooling",
    "video_grids",
)


@dataclass
class EncodedVideos:
    """The videos of a batch after the vision encoder (and merger / projector).

    ``output`` is the encoder's own output object (``kept_encoder_output`` edits it into what the
    model's ``forward`` takes); ``features`` (N, C) every video's scored tokens, concatenated;
    ``frames`` their layout ``[(F_v, T_v)]``; ``extras`` row-aligned (N, ...) tensors gathered with
    the same indices; ``tail[v]`` placeholder tokens always kept after video v (LLaVA-OneVision's
    newline; empty: none); ``heads`` (sum F_v, H, C) the features of H placeholder tokens always
    kept at the start of every frame (Video-LLaVA's CLS; None: none). Families subclass it for
    what their output's form needs.
    """

    output: Any
    features: torch.Tensor
    frames: list
    extras: list = field(default_factory=list)
    tail: list = field(default_factory=list)
    heads: Optional[torch.Tensor] = None

    def placeholder_keep(self, mask: torch.Tensor) -> torch.Tensor:
        """Keep flags of every video placeholder, videos in order: the selection ``mask`` (N,),
        with each frame's ``heads`` before its tokens and ``tail[v]`` after each video."""
        if not any(self.tail) and self.heads is None:
            return mask
        parts, start = [], 0
        for v, (F, T) in enumerate(self.frames):
            frame = mask[start : start + F * T]
            if self.heads is not None:
                frame = torch.cat([frame.new_ones(F, self.heads.shape[1]), frame.view(F, T)], dim=1).flatten()
            parts += [frame, mask.new_ones(self.tail[v] if self.tail else 0)]
            start += F * T
        return torch.cat(parts)

    def with_heads(self, comp: Compression) -> torch.Tensor:
        """(K + sum F_v * H, C): the kept rows in placeholder order, every frame's ``heads`` rows
        first (``comp.indices`` are ascending: a stable sort by frame keeps the rest in order)."""
        per_frame = torch.tensor([T for F, T in self.frames for _ in range(F)], device=comp.indices.device)
        frame_of = torch.repeat_interleave(torch.arange(per_frame.numel(), device=per_frame.device), per_frame)
        H = self.heads.shape[1]
        head_frame = torch.arange(per_frame.numel(), device=per_frame.device).repeat_interleave(H)
        keys = torch.cat([2 * head_frame, 2 * frame_of[comp.indices] + 1])
        rows = torch.cat([self.heads.reshape(-1, self.heads.shape[-1]).to(comp.features.dtype), comp.features])
        return rows[torch.argsort(keys, stable=True)]


@dataclass
class Pruned:
    """Result of :meth:`Adapter.prune`: ``kwargs`` for ``model.generate`` and what was chosen."""

    kwargs: dict
    compression: Optional[Compression]
    video_tokens_before: int = 0
    video_tokens_after: int = 0
    #: transformers < 5.18: what the inner model's ``get_video_features`` must be while generating
    encoder: Optional[Callable] = None


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
    """ "right" when some row ends in padding, else "left" (also for a batch without padding)."""
    return "right" if bool((attention_mask[:, -1] == 0).any()) else "left"


def repack_rows(
    drop: torch.Tensor, pad_value: int, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: dict
) -> tuple:
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

    #: model_type -> name of the transformers class of that model_type this adapter drives
    model_classes: dict = {}
    #: lmms-eval ``--model`` names (with the flags they need) that load one of ``model_classes``
    lmms_eval_models: tuple = ()
    #: the inner model's method that encodes videos (the timing record's encoder time)
    encoder_name: str = "get_video_features"

    # -------------------------------------------------------------------------------- hooks
    def inner_model(self, model):
        """The module that holds ``get_video_features`` (and, with M-RoPE, ``get_rope_index`` and
        ``rope_deltas``): ``model.model`` for every family but the Qwen2.5-Omni thinker of
        transformers < 5.21, which holds them itself."""
        return model.model

    def step_model(self, model):
        """The module whose ``forward`` ``generate()`` runs at every step: the model itself, but
        for a whole Qwen2.5-Omni model, which generates text through its thinker."""
        return model

    def video_placeholders(self, model, inputs: dict) -> torch.Tensor:
        """(B, L) bool: the video placeholders of a prompt (``inputs``: ``input_ids`` and, for the
        families that need them, ``mm_token_type_ids``)."""
        return inputs["input_ids"] == model.config.video_token_id

    def check_inputs(self, model, inputs: dict) -> None:
        """Raise a clear ValueError when the inputs do not match their grids."""

    def encode_videos(self, model, inputs: dict, get_video_features=None) -> EncodedVideos:
        """Encode with ``get_video_features`` (default: the model's own)."""
        raise NotImplementedError

    def full_positions(self, model, inputs: dict) -> Optional[torch.Tensor]:
        """(3, B, L) M-RoPE positions of the unpruned sequence (gathered for the kept tokens), or
        None for 1-D positions (generate() re-makes them contiguous)."""
        return None

    def kept_encoder_output(self, videos: EncodedVideos, comp: Compression):
        """The encoder output restricted to the kept tokens, in the form ``forward`` expects: by
        default one ``pooler_output`` tensor per video, of its kept tokens."""
        videos.output.pooler_output = comp.split()
        return videos.output

    def has_video(self, inputs: dict) -> bool:
        return inputs.get("pixel_values_videos") is not None

    # -------------------------------------------------------------------------------- pipeline
    @torch.no_grad()
    def prune(self, model, inputs: dict, settings: Settings) -> Pruned:
        """Steps 1-5 of the module docstring for one ``generate()`` call's inputs."""
        inputs = dict(inputs)
        if not self.has_video(inputs):
            return Pruned(inputs, None)
        if inputs.get("input_ids") is None:
            raise ValueError("VidCom2 adapters prune input_ids: pass the processor's input_ids, not inputs_embeds")
        self.check_inputs(model, inputs)
        if inputs.get("attention_mask") is None:
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        videos = self.encode_videos(model, inputs)
        comp = settings.compress(videos.features, videos.frames, extras=videos.extras)
        keep = videos.placeholder_keep(comp.mask)
        out = self.pruned_prompt(model, inputs, self.dropped_positions(model, inputs, keep))
        pruned = Pruned(out, comp, video_tokens_before=keep.numel(), video_tokens_after=int(keep.sum()))
        self.hand_over(model, pruned, self.kept_encoder_output(videos, comp), settings)
        return pruned

    def dropped_positions(self, model, inputs: dict, keep: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: the video placeholders whose token is not kept (``keep`` has one flag per
        placeholder, in order)."""
        is_video = self.video_placeholders(model, inputs)
        if int(is_video.sum()) != keep.numel():
            raise ValueError(
                f"the prompt has {int(is_video.sum())} video placeholder tokens but the videos have "
                f"{keep.numel()} tokens: input_ids do not match the video grids"
            )
        drop = torch.zeros_like(is_video)
        drop[is_video] = ~keep.to(drop.device)
        return drop

    def pruned_prompt(self, model, inputs: dict, drop: torch.Tensor) -> dict:
        """The inputs without the dropped positions: ``input_ids``, ``attention_mask``,
        ``mm_token_type_ids`` and (M-RoPE) ``position_ids`` of the kept tokens."""
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        rows = {}
        positions = self.full_positions(model, inputs)
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
            set_rope_deltas(self.inner_model(model), new_rows["positions"], new_mask)
        return out

    def hand_over(self, model, pruned: Pruned, kept_output, settings: Settings) -> None:
        """Give ``forward`` the kept features: ``mm_encoder_outputs`` (transformers >= 5.18), else
        a stand-in for ``get_video_features`` during the call (forward re-encodes on 5.12-5.17)."""
        out = pruned.kwargs
        if accepts_encoder_outputs(self.step_model(model)):
            for key in VIDEO_INPUTS:
                out.pop(key, None)
            out["mm_encoder_outputs"] = {**(out.get("mm_encoder_outputs") or {}), "video": kept_output}
        else:  # forward re-encodes the pixels through the stand-in, which returns the kept tokens only
            pruned.encoder = self.compressing_encoder(model, settings)

    def compressing_encoder(self, model, settings: Settings):
        """A stand-in for the inner model's ``get_video_features`` that returns only the kept tokens.
        It recompresses whatever it encodes (selection is deterministic per video), so batches
        expanded for beams or several return sequences stay aligned with the pruned prompts."""
        original = self.inner_model(model).get_video_features

        signature = inspect.signature(original)
        pixels = next(iter(signature.parameters))  # the pixels come first, whatever their name

        @functools.wraps(original)
        def get_video_features(*args, **kwargs):
            inputs = {}  # the encoder's arguments by name (VideoLLaMA3's video_merge_sizes, ...)
            for name, value in signature.bind_partial(*args, **kwargs).arguments.items():
                kind = signature.parameters[name].kind
                inputs.update(value if kind is inspect.Parameter.VAR_KEYWORD else {name: value})
            inputs["pixel_values_videos"] = inputs.pop(pixels)
            videos = self.encode_videos(model, inputs, original)
            return self.kept_encoder_output(videos, settings.compress(videos.features, videos.frames, videos.extras))

        return get_video_features


class FramePixelsAdapter(Adapter):
    """Families whose videos are ``pixel_values_videos`` (videos, frames, 3, H, W), every frame a
    run of placeholders, and whose positions are 1-D (generate() re-makes them contiguous over the
    kept tokens): LLaVA-OneVision, LLaVA-NeXT-Video, Video-LLaVA, PerceptionLM. :meth:`encoder_output` calls the
    encoder the way their ``forward`` does."""

    def check_inputs(self, model, inputs: dict) -> None:
        pixels = inputs["pixel_values_videos"]
        if pixels.dim() != 5:
            raise ValueError(f"pixel_values_videos must be (videos, frames, 3, H, W), got {tuple(pixels.shape)}")

    def encoder_output(self, model, inputs: dict, get_video_features=None, select_strategy: bool = True):
        """The encoder output of ``inputs``' videos, with the call's (else the config's) feature
        layer and, when the encoder takes one, selection strategy."""
        encode = get_video_features or self.inner_model(model).get_video_features
        names = ["vision_feature_layer"] + (["vision_feature_select_strategy"] if select_strategy else [])
        options = {n: inputs[n] if inputs.get(n) is not None else getattr(model.config, n) for n in names}
        return encode(inputs["pixel_values_videos"], **options, return_dict=True)

    def kept_encoder_output(self, videos: EncodedVideos, comp: Compression):
        """One item per kept placeholder, (K, 1, C), each frame's always-kept ``heads`` included:
        ``forward`` flattens the items back into the placeholders, and generate() groups them per
        sample by placeholder count when it repeats them for beams (so unequal counts per video
        stay batchable)."""
        rows = comp.features if videos.heads is None else videos.with_heads(comp)
        videos.output.pooler_output = rows[:, None]
        return videos.output


def set_rope_deltas(inner, positions: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """M-RoPE models cache ``rope_deltas`` (B, 1), the offset decoding adds to the text position
    of each new token; generate() computes it only when it builds the positions itself. From the
    kept positions (3, B, L): ``max position + 1 - kept length`` per row."""
    inner.rope_deltas = (positions.amax(dim=(0, 2)) + 1 - attention_mask.sum(dim=1))[:, None]
