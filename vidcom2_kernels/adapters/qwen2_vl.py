"""Qwen2-VL: a video is ``grid_thw = (t, h, w)`` patches; a "frame" of the score space is one
temporal patch group of ``h * w / merge**2`` tokens. Positions are 3-row M-RoPE."""

from __future__ import annotations

import torch

from .base import Adapter, EncodedVideos


class Qwen2VLAdapter(Adapter):
    model_classes = {"qwen2_vl": "Qwen2VLForConditionalGeneration"}
    lmms_eval_models = ("qwen2_vl",)

    def merge(self, model) -> int:
        return model.config.vision_config.spatial_merge_size

    def frames(self, model, grid_thw: torch.Tensor) -> list:
        m2 = self.merge(model) ** 2
        return [(t, h * w // m2) for t, h, w in grid_thw.tolist()]

    def check_inputs(self, model, inputs: dict) -> None:
        grid = inputs.get("video_grid_thw")
        if grid is None:
            raise ValueError("pixel_values_videos given without video_grid_thw")
        if grid.dim() != 2 or grid.shape[1] != 3:
            raise ValueError(f"video_grid_thw must have shape (videos, 3), got {tuple(grid.shape)}")
        patches = int(grid.prod(-1).sum())
        if inputs["pixel_values_videos"].shape[0] != patches:
            raise ValueError(
                f"pixel_values_videos has {inputs['pixel_values_videos'].shape[0]} patches but "
                f"video_grid_thw {grid.tolist()} describes {patches}"
            )

    def encode_videos(self, model, inputs: dict, get_video_features=None) -> EncodedVideos:
        encode = get_video_features or self.inner_model(model).get_video_features
        out = encode(inputs["pixel_values_videos"], inputs["video_grid_thw"], return_dict=True)
        return EncodedVideos(out, torch.cat(out.pooler_output), self.frames(model, inputs["video_grid_thw"]))

    def rope_inputs(self, inputs: dict) -> dict:
        keys = ("image_grid_thw", "video_grid_thw", "attention_mask", "mm_token_type_ids")
        return {k: inputs.get(k) for k in keys}

    def full_positions(self, model, inputs: dict) -> torch.Tensor:
        if inputs.get("mm_token_type_ids") is None:
            raise ValueError(
                "mm_token_type_ids is missing: pass the processor's full output (it makes M-RoPE positions)"
            )
        positions, _ = self.inner_model(model).get_rope_index(inputs["input_ids"], **self.rope_inputs(inputs))
        return positions
