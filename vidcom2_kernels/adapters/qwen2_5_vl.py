"""Qwen2.5-VL: as Qwen2-VL; its M-RoPE temporal positions also use ``second_per_grid_ts``."""

from __future__ import annotations

from .qwen2_vl import Qwen2VLAdapter


class Qwen25VLAdapter(Qwen2VLAdapter):
    model_classes = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}
    lmms_eval_models = ("qwen2_5_vl",)

    def rope_inputs(self, inputs: dict) -> dict:
        return {**super().rope_inputs(inputs), "second_per_grid_ts": inputs.get("second_per_grid_ts")}
