"""Qwen3-Omni (MoE), through its thinker: the Qwen2.5-Omni layout and TMRoPE (its positions are
float32: half a second per temporal group is a time step of 6.5 at 13 positions per second, and
decoding continues from a fractional offset), with Qwen3-VL's deepstack features gathered with
the same indices as the kept tokens. The thinker alone or the whole model; as for Qwen2.5-Omni,
a whole-model call with a video that would run the talker is refused
(:func:`~vidcom2_kernels.adapters.qwen2_5_omni.talker_runs`)."""

from __future__ import annotations

from .qwen2_5_omni import Qwen25OmniAdapter
from .qwen3_vl import Qwen3VLAdapter


class Qwen3OmniAdapter(Qwen25OmniAdapter, Qwen3VLAdapter):
    """Qwen2.5-Omni's placement and positions, Qwen3-VL's deepstack encoding."""

    model_classes = {
        "qwen3_omni_moe_thinker": "Qwen3OmniMoeThinkerForConditionalGeneration",
        "qwen3_omni_moe": "Qwen3OmniMoeForConditionalGeneration",
    }
    lmms_eval_models = ("qwen3_omni",)
