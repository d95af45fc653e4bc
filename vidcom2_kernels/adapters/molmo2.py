"""Molmo2: ``video_grids`` = (frames, rows, cols) per video; every frame is its timestamp (text),
``<frame_start>``, ``rows * cols`` placeholders and ``<frame_end>``, frames joined by a space. The
placeholder is ``image_patch_id`` for images and videos alike, and a token's feature is ADDED to
its placeholder's embedding; each token is pooled from its patches by cross-attention over the
indices in ``video_token_pooling``. Only the placeholders are scored and dropped; the markers and
timestamps are text. ``mm_token_type_ids == 1`` (markers and placeholders) makes all of a
sample's visual tokens one bidirectional block, and what stays of them still is. 1-D positions.
A prompt with images and a video is refused: Molmo2's ``forward`` then uses the images' features
and never the video's."""

from __future__ import annotations

import torch

from .base import Adapter, EncodedVideos


class Molmo2Adapter(Adapter):
    model_classes = {"molmo2": "Molmo2ForConditionalGeneration"}

    def check_inputs(self, model, inputs: dict) -> None:
        if inputs.get("pixel_values") is not None:
            raise ValueError(
                "Molmo2 with images and a video in one call: its forward uses the images' features for every "
                "placeholder and never the video's, so there is no video to compress; pass them in separate calls"
            )
        grids, pooling = inputs.get("video_grids"), inputs.get("video_token_pooling")
        if grids is None or pooling is None:
            raise ValueError("pixel_values_videos given without video_grids and video_token_pooling")
        if grids.dim() != 2 or grids.shape[1] != 3:
            raise ValueError(f"video_grids must be (videos, 3) = (frames, rows, cols), got {tuple(grids.shape)}")
        frames, tokens = int(grids[:, 0].sum()), int(grids.prod(-1).sum())
        if inputs["pixel_values_videos"].shape[0] != frames or pooling.shape[0] != tokens:
            raise ValueError(
                f"video_grids {grids.tolist()} describe {frames} frames and {tokens} tokens, but pixel_values_videos "
                f"has {inputs['pixel_values_videos'].shape[0]} frames and video_token_pooling {pooling.shape[0]} rows"
            )

    def encode_videos(self, model, inputs: dict, get_video_features=None) -> EncodedVideos:
        encode = get_video_features or self.inner_model(model).get_video_features
        out = encode(
            inputs["pixel_values_videos"], inputs["video_token_pooling"], inputs["video_grids"], return_dict=True
        )
        frames = [(t, rows * cols) for t, rows, cols in inputs["video_grids"].tolist()]
        return EncodedVideos(out, torch.cat(out.pooler_output), frames)
