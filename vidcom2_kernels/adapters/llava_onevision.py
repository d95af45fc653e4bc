"""LLaVA-OneVision (and the LLaVA-Video checkpoints converted to this class): every frame is
pooled to ``ceil(side / 2)**2`` tokens (196 at 384 px), frames follow each other, and one
``image_newline`` token closes each video; it is always kept. Positions are 1-D: generate()
re-makes them contiguous over the kept tokens (gapped 1-D positions without a mask would make the
attention block-diagonal, see the design notes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import EncodedVideos, FramePixelsAdapter


@dataclass
class NewlineVideos(EncodedVideos):
    """LLaVA-OneVision's encoded videos. ``includes_newline``: the encoder output already ends
    every video with the newline token (transformers >= 5.18; older 5.x appends it in forward)."""

    includes_newline: bool = False


class LlavaOnevisionAdapter(FramePixelsAdapter):
    model_classes = {"llava_onevision": "LlavaOnevisionForConditionalGeneration"}
    lmms_eval_models = ("llava_hf --force_simple",)

    def tokens_per_frame(self, model) -> int:
        side = model.config.vision_config.image_size // model.config.vision_config.patch_size
        return math.ceil(side / 2) ** 2

    def encode_videos(self, model, inputs: dict, get_video_features=None) -> NewlineVideos:
        pixels = inputs["pixel_values_videos"]
        out = self.encoder_output(model, inputs, get_video_features)
        V, F, T = pixels.shape[0], pixels.shape[1], self.tokens_per_frame(model)
        pooled = out.pooler_output
        if pooled.shape[1] not in (F * T, F * T + 1):
            raise ValueError(f"expected {F} frames x {T} tokens per video, the encoder gave {pooled.shape[1]}")
        features = pooled[:, : F * T].reshape(V * F * T, -1)
        return NewlineVideos(out, features, [(F, T)] * V, tail=[1] * V, includes_newline=pooled.shape[1] == F * T + 1)

    def kept_encoder_output(self, videos: NewlineVideos, comp):
        counts = comp.counts.tolist()
        kept = list(torch.split(comp.features, counts))
        if videos.includes_newline:
            newline = videos.output.pooler_output[:, -1:]
            kept = [torch.cat([k, newline[v]]) for v, k in enumerate(kept)]
        if len(set(counts)) == 1:
            videos.output.pooler_output = torch.stack(kept)
        elif videos.includes_newline:
            # unequal counts: one "item" per token, (K, 1, C). forward flattens it back to (K, C);
            # generate() groups items per sample by their placeholder counts before repeating them
            # for beams / return sequences, which a packed (1, K, C) row would repeat whole
            videos.output.pooler_output = torch.cat(kept)[:, None]
        else:
            raise ValueError(
                "with transformers < 5.18 LLaVA-OneVision needs the same kept count for every video of a "
                f"batch (got {counts}): use exact=True with videos of the same size"
            )
        return videos.output
