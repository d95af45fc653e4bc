"""Qwen3-VL: as Qwen2-VL, plus the "deepstack" features of several vision layers, which are
injected into early language-model layers at the visual positions: they are gathered with the
SAME indices as the main features (in the same gather launch). The timestamp text tokens the
processor puts between frames are ordinary text and keep their positions."""

from __future__ import annotations

import torch

from .qwen2_vl import Qwen2VLAdapter


class Qwen3VLAdapter(Qwen2VLAdapter):
    model_classes = {"qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration"}

    def extras(self, encoder_output) -> list:
        layers = encoder_output.deepstack_features or []
        # transformers >= 5.18 splits every layer per video, 5.17 keeps one tensor per layer
        self.split_deepstack = bool(layers) and isinstance(layers[0], (tuple, list))
        return [torch.cat(layer) if self.split_deepstack else layer for layer in layers]

    def kept_encoder_output(self, encoder_output, comp, frames, tail):
        counts = comp.counts.tolist()
        encoder_output.pooler_output = tuple(torch.split(comp.features, counts))
        encoder_output.deepstack_features = [
            tuple(torch.split(layer, counts)) if self.split_deepstack else layer for layer in comp.extras
        ]
        return encoder_output
