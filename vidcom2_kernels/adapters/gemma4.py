"""Gemma 4: every video frame is ``mm:ss <boi>``, its ``k`` pooled placeholders and ``<eoi>``,
frames joined by a space; the placeholders' features come from the vision tower's patches of the
frame pooled ``pooling_kernel_size`` x ``pooling_kernel_size``. Only the placeholders are scored
and dropped; the timestamps and the frame markers are text. Positions are 1-D (generate() makes
them contiguous over what stays). With ``use_bidirectional_attention="vision"`` each frame's run
of placeholders is one bidirectional block, read from ``mm_token_type_ids``: the kept
placeholders of a frame stay one run, so each frame stays one block. The video API this needs
(``num_frames_per_video``, frames of all videos concatenated) is transformers 5.19's and later's.

Gemma 4 Unified (``Gemma4UnifiedForConditionalGeneration``) lays out its prompt the same way; it has
no vision tower: its video processor merges k x k pixel patches into one model patch, which a
linear embedder turns into one placeholder's feature, so a frame has one placeholder per valid
model patch."""

from __future__ import annotations

import inspect

import torch

from .base import Adapter, EncodedVideos


class Gemma4Adapter(Adapter):
    model_classes = {"gemma4": "Gemma4ForConditionalGeneration"}
    lmms_eval_models = ("gemma4",)

    def check_inputs(self, model, inputs: dict) -> None:
        if "num_frames_per_video" not in inspect.signature(self.step_model(model).forward).parameters:
            raise ValueError(
                "this transformers' Gemma 4 takes videos without num_frames_per_video (transformers < 5.19): "
                "VidCom2 needs the later video API; upgrade transformers"
            )
        for key in ("num_frames_per_video", "video_position_ids"):
            if inputs.get(key) is None:
                raise ValueError(f"{key} is missing: pass the processor's full output with pixel_values_videos")
        pixels, frames = inputs["pixel_values_videos"], inputs["num_frames_per_video"]
        if pixels.dim() != 3 or pixels.shape[0] != int(frames.sum()):
            raise ValueError(
                f"pixel_values_videos must be (frames of every video, patches, patch pixels) with "
                f"{int(frames.sum())} frames (num_frames_per_video {frames.tolist()}), got {tuple(pixels.shape)}"
            )

    def patches_per_placeholder(self, model) -> int:
        """Valid patches of ``video_position_ids`` per placeholder: the tower pools k x k."""
        return model.config.vision_config.pooling_kernel_size**2

    def frames(self, model, inputs: dict) -> list:
        """(frames, placeholders per frame) of each video: a frame's valid patches (position not
        -1) over :meth:`patches_per_placeholder`; every frame of one video must have the same count."""
        valid = (inputs["video_position_ids"] != -1).all(dim=-1).sum(dim=-1)
        per_frame = valid // self.patches_per_placeholder(model)
        out = []
        for v, counts in enumerate(torch.split(per_frame, inputs["num_frames_per_video"].tolist())):
            if not bool((counts == counts[0]).all()):
                raise ValueError(f"the frames of video {v} have different token counts {counts.tolist()}")
            out.append((len(counts), int(counts[0])))
        return out

    def encode_videos(self, model, inputs: dict, get_video_features=None) -> EncodedVideos:
        encode = get_video_features or self.inner_model(model).get_video_features
        out = encode(
            inputs["pixel_values_videos"],
            inputs["video_position_ids"],
            num_frames_per_video=inputs["num_frames_per_video"],
            return_dict=True,
        )
        return EncodedVideos(out, torch.cat(out.pooler_output), self.frames(model, inputs))


class Gemma4UnifiedAdapter(Gemma4Adapter):
    model_classes = {"gemma4_unified": "Gemma4UnifiedForConditionalGeneration"}
    lmms_eval_models = ("gemma4",)  # lmms-eval's gemma4 loads AutoModelForImageTextToText

    def patches_per_placeholder(self, model) -> int:
        """One: the video processor already merged k x k pixel patches into each model patch."""
        return 1
