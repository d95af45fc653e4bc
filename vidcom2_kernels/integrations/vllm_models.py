"""vLLM model classes the plugin (:mod:`.vllm`) registers: VidCom2 for models where vLLM itself
offers only EVS. vLLM's ModelRegistry imports this module when it loads such a model (never at
plugin registration: importing vLLM's model code there could initialise a device)."""

from __future__ import annotations

import functools

from vllm.model_executor.models import qwen2_5_vl

from . import vllm as plugin

#: EVS's count, from the ``video_prune`` package the plugin found (vLLM's old or new path)
EVS_COUNT = plugin.hooks().evs.compute_retained_tokens_count


class Qwen2_5_VLVidCom2(qwen2_5_vl.Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL with ``--video-pruning-method vidcom2``. The prompt's placeholders are still
    sized by Qwen2.5-VL's processor, with EVS's ``compute_retained_tokens_count``
    (``max(tokens_per_frame, int(N * (1 - q)))``), so VidCom2 keeps exactly that many tokens; it
    equals VidCom2's own count ``max(T, min(int(N * (1 - q)), N))`` unless fewer than one frame's
    tokens would be kept. Everything else (M-RoPE positions of the kept tokens) is vLLM's EVS path."""

    supported_video_pruning_methods = ("evs", "vidcom2")

    def _postprocess_video_embeds_evs(self, video_embeds_split, video_input):
        if self.multimodal_config.video_pruning_method != "vidcom2":
            return super()._postprocess_video_embeds_evs(video_embeds_split, video_input)
        evs_mask = qwen2_5_vl.compute_retention_mask  # the name vLLM's EVS path calls, swapped for the call
        qwen2_5_vl.compute_retention_mask = functools.partial(plugin.retention_mask, count=EVS_COUNT)
        try:
            return super()._postprocess_video_embeds_evs(video_embeds_split, video_input)
        finally:
            qwen2_5_vl.compute_retention_mask = evs_mask
