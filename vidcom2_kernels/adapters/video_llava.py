"""Video-LLaVA: every frame is ``1 + P`` placeholders, the vision tower's CLS token and then its
``P = (side / patch)**2`` patch tokens (256 at 224 px), frames one after another, no separators.
The patch tokens are scored and pruned; each frame's CLS token, the tower's summary of the whole
frame, is always kept (like LLaVA-OneVision's newline). Positions are 1-D."""

from __future__ import annotations

from .base import EncodedVideos, FramePixelsAdapter


class VideoLlavaAdapter(FramePixelsAdapter):
    model_classes = {"video_llava": "VideoLlavaForConditionalGeneration"}
    lmms_eval_models = ("video_llava",)

    def encode_videos(self, model, inputs: dict, get_video_features=None) -> EncodedVideos:
        out = self.encoder_output(model, inputs, get_video_features, select_strategy=False)
        V, F = inputs["pixel_values_videos"].shape[:2]
        pooled = out.pooler_output  # (V * F, 1 + P, C): CLS first
        if pooled.dim() != 3 or pooled.shape[0] != V * F or pooled.shape[1] < 2:
            raise ValueError(f"expected ({V * F} frames, 1 + patches, C) video features, got {tuple(pooled.shape)}")
        P = pooled.shape[1] - 1
        return EncodedVideos(out, pooled[:, 1:].reshape(V * F * P, -1), [(F, P)] * V, heads=pooled[:, :1])
