"""VideoLLaMA3: ``video_grid_thw`` = (frames, h, w) patches per video, ``video_merge_sizes`` the
spatial merge of each video, so a frame is ``h * w / merge**2`` tokens, frame after frame. The
processor writes every frame as ``Time t.1fs:`` (text) and its placeholders, frames joined by
","; only the placeholders are scored and dropped; 1-D positions.

Its processor has a token compression of its own (``video_compression_mask``, on by default): it
drops patches that repeat the previous frame, so frames keep different counts. VidCom2's frame
budgets need whole frames, so a video the processor already compressed is refused with the reason
(process it with ``use_token_compression=False``; VidCom2 then chooses what stays). An all-true
mask is what that option gives, and is accepted; before transformers 5.18 that same mask carries
VidCom2's selection into ``forward``."""

from __future__ import annotations

import torch

from .base import Adapter, EncodedVideos, Pruned, accepts_encoder_outputs
from .settings import Settings


class VideoLlama3Adapter(Adapter):
    model_classes = {"video_llama_3": "VideoLlama3ForConditionalGeneration"}

    def check_inputs(self, model, inputs: dict) -> None:
        grid, merges = inputs.get("video_grid_thw"), inputs.get("video_merge_sizes")
        if grid is None or merges is None:
            raise ValueError("pixel_values_videos given without video_grid_thw and video_merge_sizes")
        if grid.dim() != 2 or grid.shape[1] != 3 or merges.shape != grid.shape[:1]:
            raise ValueError(
                f"video_grid_thw must be (videos, 3) and video_merge_sizes (videos,), got "
                f"{tuple(grid.shape)} and {tuple(merges.shape)}"
            )
        patches = int(grid.prod(-1).sum())
        if inputs["pixel_values_videos"].shape[0] != patches:
            raise ValueError(
                f"pixel_values_videos has {inputs['pixel_values_videos'].shape[0]} patches but "
                f"video_grid_thw {grid.tolist()} describes {patches}"
            )
        mask = inputs.get("video_compression_mask")
        if mask is not None and not bool(mask.all()):
            raise ValueError(
                f"VideoLLaMA3's processor already dropped {int((~mask.bool()).sum())} of {mask.numel()} video "
                "tokens with its own token compression (video_compression_mask), leaving frames of different "
                "sizes; VidCom2's frame budgets need whole frames: process the video with "
                "use_token_compression=False and let VidCom2 choose what stays"
            )

    def frames(self, inputs: dict) -> list:
        """(frames, tokens per frame) of each video."""
        merges = inputs["video_merge_sizes"].tolist()
        return [(t, h * w // m**2) for (t, h, w), m in zip(inputs["video_grid_thw"].tolist(), merges)]

    def encode_videos(self, model, inputs: dict, get_video_features=None) -> EncodedVideos:
        encode = get_video_features or self.inner_model(model).get_video_features
        out = encode(
            inputs["pixel_values_videos"], inputs["video_grid_thw"], inputs["video_merge_sizes"], return_dict=True
        )
        return EncodedVideos(out, torch.cat(out.pooler_output), self.frames(inputs))

    def hand_over(self, model, pruned: Pruned, kept_output, settings: Settings) -> None:
        """transformers >= 5.18: the kept features through ``mm_encoder_outputs``. Before, forward
        re-encodes every token and then applies ``video_compression_mask``: the mask carries the
        selection (all video tokens, kept ones True), and generate() repeats it per sample for beams."""
        if accepts_encoder_outputs(self.step_model(model)):
            super().hand_over(model, pruned, kept_output, settings)
        else:
            pruned.kwargs["video_compression_mask"] = pruned.compression.mask
