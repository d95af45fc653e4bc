"""Qwen3-VL: as Qwen2-VL, plus the "deepstack" features of several vision layers, which are
injected into early language-model layers at the visual positions: they are gathered with the
SAME indices as the main features (in the same gather launch). The timestamp text tokens the
processor puts between frames are ordinary text and keep their positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import EncodedVideos
from .qwen2_vl import Qwen2VLAdapter


@dataclass
class DeepstackVideos(EncodedVideos):
    """Qwen3-VL's encoded videos; ``extras`` are the deepstack layers, concatenated over videos.
    ``per_video_layers``: the encoder gave every layer as one tensor per video (transformers
    >= 5.18; 5.17 gives one tensor per layer), and ``forward`` wants them back that way."""

    per_video_layers: bool = False


class Qwen3VLAdapter(Qwen2VLAdapter):
    model_classes = {
        "qwen3_vl": "Qwen3VLForConditionalGeneration",
        "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
    }
    lmms_eval_models = ("qwen3_vl",)

    def encode_videos(self, model, inputs: dict, get_video_features=None) -> DeepstackVideos:
        videos = super().encode_videos(model, inputs, get_video_features)
        layers = videos.output.deepstack_features or []
        per_video = bool(layers) and isinstance(layers[0], (tuple, list))
        extras = [torch.cat(layer) if per_video else layer for layer in layers]
        return DeepstackVideos(videos.output, videos.features, videos.frames, extras, per_video_layers=per_video)

    def kept_encoder_output(self, videos: DeepstackVideos, comp):
        counts = comp.counts.tolist()
        videos.output.pooler_output = tuple(torch.split(comp.features, counts))
        videos.output.deepstack_features = [
            tuple(torch.split(layer, counts)) if videos.per_video_layers else layer for layer in comp.extras
        ]
        return videos.output
