"""GLM-4.1V, GLM-4.5V (MoE) and GLM-4.6V: a video is ``<begin_of_video>``, then per temporal
patch group ``<begin_of_image>``, ``h * w / merge**2`` placeholders, ``<end_of_image>`` and the
group's timestamp as text, then ``<end_of_video>``. The placeholder is the IMAGE token id; the
processor's ``mm_token_type_ids == 2`` marks it as video. Only those placeholders are scored and
pruned; the frame markers and timestamps are text and keep their positions. Positions are 3-row
M-RoPE, each group its own t = 1 grid (``get_rope_index``): the full prompt's are gathered, as
for Qwen2-VL."""

from __future__ import annotations

import torch

from .qwen2_vl import Qwen2VLAdapter


class Glm4vAdapter(Qwen2VLAdapter):
    model_classes = {
        "glm4v": "Glm4vForConditionalGeneration",
        "glm4v_moe": "Glm4vMoeForConditionalGeneration",
        "glm46v": "Glm46VForConditionalGeneration",
    }
    lmms_eval_models = ("glm4v",)

    def video_placeholders(self, model, inputs: dict) -> torch.Tensor:
        types = inputs.get("mm_token_type_ids")
        if types is None:
            raise ValueError(
                "mm_token_type_ids is missing: GLM-4V marks its video placeholders (image token ids) there; "
                "pass the processor's full output"
            )
        return (inputs["input_ids"] == model.config.image_token_id) & (types.to(inputs["input_ids"].device) == 2)
