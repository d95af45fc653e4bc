"""LLaVA-NeXT-Video: every frame is ``T`` placeholders, its patch tokens average-pooled by
``spatial_pool_stride`` (144 at 336 px, stride 2), frames one after another with no newline or
separator. Every token is scored; nothing is always kept. Positions are 1-D. The encoder's
``pooler_output`` is (videos, F * T, C) on transformers >= 5.18 and a tuple of (F, T, C) per video
on 5.17; the kept features go back in the same form."""

from __future__ import annotations

import torch

from .base import EncodedVideos, FramePixelsAdapter


class LlavaNextVideoAdapter(FramePixelsAdapter):
    model_classes = {"llava_next_video": "LlavaNextVideoForConditionalGeneration"}
    lmms_eval_models = ()  # lmms-eval 0.7.3 has no model name that loads this class

    def encode_videos(self, model, inputs: dict, get_video_features=None) -> EncodedVideos:
        out = self.encoder_output(model, inputs, get_video_features)
        V, F = inputs["pixel_values_videos"].shape[:2]
        pooled = out.pooler_output
        videos = list(pooled) if isinstance(pooled, (tuple, list)) else [p.unflatten(0, (F, -1)) for p in pooled]
        if len(videos) != V or any(v.dim() != 3 or v.shape[0] != F for v in videos):
            shapes = [tuple(v.shape) for v in videos]
            raise ValueError(f"expected {V} videos of ({F} frames, tokens, C) features, got {shapes}")
        T = videos[0].shape[1]
        return EncodedVideos(out, torch.cat([v.flatten(0, 1) for v in videos]), [(F, T)] * V)

    def kept_encoder_output(self, videos: EncodedVideos, comp):
        """(K, 1, C) items (:meth:`FramePixelsAdapter.kept_encoder_output`), or on transformers 5.17,
        whose ``forward`` flattens each video's item, a tuple of (k_v, 1, C) per video."""
        per_video = isinstance(videos.output.pooler_output, (tuple, list))
        out = super().kept_encoder_output(videos, comp)
        if per_video:
            out.pooler_output = torch.split(out.pooler_output, comp.counts.tolist())
        return out
