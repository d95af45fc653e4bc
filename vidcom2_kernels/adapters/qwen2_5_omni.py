"""Qwen2.5-Omni, through its thinker (the part that reads the prompt and writes text): a video is
``<vision_bos>``, ``t * h * w / merge**2`` placeholders, ``<vision_eos>``, as in Qwen2.5-VL.
Positions are TMRoPE, a 3-row M-RoPE whose time row is the grid index x ``video_second_per_grid``
x ``position_id_per_seconds``. With ``use_audio_in_video`` the processor interleaves the video's
placeholders with its audio placeholders in time chunks: the audio is kept, only video
placeholders are scored and dropped, and what stays keeps its order and its full-prompt position
(the released VidCom2, branch omni, prunes the same tokens, one sample at a time).

Both classes are supported: the thinker alone, and the whole Omni model, whose ``generate``
hands the prompt to its thinker. The whole model's talker (speech output) reads the thinker's
hidden state at every position of the prompt it was given, so it cannot follow a pruned prompt:
a call with a video that would run the talker is refused (:func:`talker_runs`); ask for text with
``generation_mode="text"``. (transformers' whole-model ``generate`` reads the talker's pad token
even then, so a whole model with its talker disabled cannot generate at all.) The thinkers need
transformers 5.18 or later (``mm_encoder_outputs``): before, the thinker re-encodes the video inside
``forward`` and, for beams or several return sequences, repeats ``pixel_values_videos`` patch by
patch, garbling every video (the plain model's answers too), so those versions are refused. Before
5.21 the thinker holds its vision tower, ``get_rope_index`` and ``rope_deltas`` itself; from 5.21
on, ``thinker.model`` does."""

from __future__ import annotations

import inspect

import torch

from .base import accepts_encoder_outputs
from .qwen2_vl import Qwen2VLAdapter


class Qwen25OmniAdapter(Qwen2VLAdapter):
    model_classes = {
        "qwen2_5_omni_thinker": "Qwen2_5OmniThinkerForConditionalGeneration",
        "qwen2_5_omni": "Qwen2_5OmniForConditionalGeneration",
    }
    lmms_eval_models = ("qwen2_5_omni",)

    def step_model(self, model):
        return getattr(model, "thinker", model)

    def inner_model(self, model):
        thinker = self.step_model(model)
        inner = getattr(thinker, "model", None)
        return inner if hasattr(inner, "get_video_features") else thinker

    def merge(self, model) -> int:
        return self.step_model(model).config.vision_config.spatial_merge_size

    def video_placeholders(self, model, inputs: dict) -> torch.Tensor:
        return inputs["input_ids"] == self.step_model(model).config.video_token_id

    def check_inputs(self, model, inputs: dict) -> None:
        thinker = self.step_model(model)
        if not accepts_encoder_outputs(thinker):
            raise ValueError(
                f"this transformers' {type(thinker).__name__} takes no mm_encoder_outputs (transformers < 5.18): "
                "it re-encodes the video inside forward and, for beams or several return sequences, repeats "
                "pixel_values_videos patch by patch, which garbles every video (the plain model's answers too); "
                "VidCom2 needs transformers >= 5.18 for the Omni thinkers"
            )
        if talker_runs(model, inputs):
            text = "return_audio=False" if takes_return_audio(model) else 'generation_mode="text"'
            raise ValueError(
                f"this {type(model).__name__}.generate() call would also speak: its talker reads the thinker's "
                "hidden state at every position of the unpruned prompt, so it cannot follow a pruned one; pass "
                f"{text} for a compressed text answer"
            )
        super().check_inputs(model, inputs)

    def full_positions(self, model, inputs: dict) -> torch.Tensor:
        lengths = inputs.get("audio_feature_lengths")
        if inputs.get("feature_attention_mask") is not None:  # what forward() uses when both are given
            lengths = inputs["feature_attention_mask"].sum(dim=1)
        positions, _ = self.inner_model(model).get_rope_index(
            inputs["input_ids"],
            inputs.get("image_grid_thw"),
            inputs["video_grid_thw"],
            inputs["attention_mask"],
            bool(inputs.get("use_audio_in_video")),
            lengths,
            inputs.get("video_second_per_grid"),
        )
        return positions


def talker_runs(model, inputs: dict) -> bool:
    """Whether a whole Omni model's ``generate(**inputs)`` may run its talker: it has one, and the
    call does not ask for text only. Text only is ``return_audio=False`` where the installed
    ``generate`` takes that parameter (Qwen3-Omni; it then decides), else ``generation_mode="text"``
    (what Qwen2.5-Omni's reads; any other value, or none, may speak). Without a talker such a call
    is transformers' own error."""
    if not getattr(model, "has_talker", False):
        return False
    if takes_return_audio(model) and inputs.get("return_audio") is not None:
        return bool(inputs["return_audio"])
    return inputs.get("generation_mode") != "text"


def takes_return_audio(model) -> bool:
    """The installed whole model's ``generate`` has a ``return_audio`` parameter."""
    return "return_audio" in inspect.signature(type(model).generate).parameters
