"""Qwen3.5 and Qwen3.5-MoE: the Qwen3-VL processor's layout (a timestamp before every temporal
patch group, which stays text) and Qwen2-VL's encoder output (one ``pooler_output`` per video, no
deepstack features); the language model mixes Gated DeltaNet and full-attention layers, which
changes nothing at the input."""

from __future__ import annotations

from .qwen2_vl import Qwen2VLAdapter


class Qwen35Adapter(Qwen2VLAdapter):
    model_classes = {"qwen3_5": "Qwen3_5ForConditionalGeneration", "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration"}
    lmms_eval_models = ("qwen3_5",)
