"""The vLLM plugin: vLLM's VidCom2 video pruning on this package's kernels.

vLLM loads ``register`` (entry point ``vllm.general_plugins: vidcom2_kernels``) in every process
it starts. It replaces ``vllm.multimodal.video_prune.vidcom2.compute_retention_mask`` (and the
copy ``qwen3_vl`` imported by name) with :func:`retention_mask`: the same signature, a bool (N,)
mask on the features' device with exactly vLLM's ``compute_retained_tokens_count`` True entries
(the count the API process sized the prompt's placeholders with), computed by
:func:`vidcom2_kernels.compress`'s pipeline with ``target=`` that count and ``validate=False``
(no host read), stopping before the row gather (vLLM applies the mask itself).
It also registers :mod:`.vllm_models` (VidCom2 for Qwen2.5-VL, where vLLM offers only EVS) and,
on vLLM's CPU platform, sets the runner's ``is_multimodal_pruning_enabled`` that vLLM 0.32's
``CPUModelRunner`` never sets (without it a pruned video crashes in ``split_with_sizes``).

Environment (read once, at ``register``):
    VIDCOM2_VLLM=0                 the plugin does nothing
    VIDCOM2_VLLM_METHOD=vidcom2    vidcom2 (default) | dycoke | dycoke+fca (VidCom2's frame
                                   budgets over DyCoke's token scores) | vllm (vLLM's own mask
                                   function; the rest of the plugin stays on)
    VIDCOM2_VLLM_BACKEND=auto      compress()'s backend

Select VidCom2 in vLLM as usual: ``--video-pruning-method vidcom2 --video-pruning-rate q`` (the
pruned fraction; this package's retention is ``1 - q``). Differences from vLLM's own port:
arithmetic in float32 whatever the input dtype (vLLM computes in the input dtype, so bf16 masks
can differ on near-ties), no host read (vLLM reads the frame budgets), and one fused pass per
stage instead of a per-frame loop. What is scored is unchanged: vLLM's Qwen3-VL passes the main
features concatenated with the deepstack features, and so the plugin scores both as vLLM does.
"""

from __future__ import annotations

import logging
import os
import sys

import torch

from .. import pipeline
from ..api import prepare
from ..backends import resolve

logger = logging.getLogger(__name__)

#: vLLM releases whose hooks this plugin was written against (``compute_retention_mask``'s
#: signature, the CPU runner, Qwen2.5-VL's EVS post-processing)
SUPPORTED_VLLM = ("0.32", "0.33")
METHODS = {"vidcom2": ("vidcom2", None), "dycoke": ("dycoke", None), "dycoke+fca": ("dycoke", "vidcom2"), "vllm": None}

#: the plugin's settings once registered, and ``calls``: masks computed in this process
_state = {
    "registered": False,
    "method": "vidcom2",
    "backend": "auto",
    "vllm_mask": None,
    "vllm_count": None,
    "calls": 0,
}


def retention_mask(
    video_embeds: torch.Tensor, video_size_thw, spatial_merge_size: int, q: float, *, count=None
) -> torch.Tensor:
    """vLLM's ``compute_retention_mask`` on the fused kernels. ``video_embeds`` (N, C) of one
    video, ``video_size_thw`` (T, H, W) its patch grid, ``q`` the pruned fraction in [0, 1).
    Returns a bool (N,) mask on ``video_embeds.device`` with ``count(tokens_per_frame, T, q)``
    True entries: by default vLLM's VidCom2 ``compute_retained_tokens_count``, the count the
    prompt's placeholders were sized with."""
    _state["calls"] += 1
    if _state["method"] == "vllm":
        return _state["vllm_mask"](video_embeds, video_size_thw, spatial_merge_size, q)
    T, H, W = (int(n) for n in video_size_thw)  # vLLM passes a list (a CPU tensor reads no device)
    tokens_per_frame = (H // spatial_merge_size) * (W // spatial_merge_size)
    if T * tokens_per_frame == 0:
        return torch.ones(0, dtype=torch.bool, device=video_embeds.device)
    if video_embeds.dim() != 2 or video_embeds.shape[0] != T * tokens_per_frame:
        raise ValueError(
            f"video_embeds must have shape ({T * tokens_per_frame}, C) for video_size_thw {(T, H, W)} and "
            f"spatial_merge_size {spatial_merge_size}, got {tuple(video_embeds.shape)}"
        )
    if not 0.0 <= q < 1.0:
        raise ValueError(f"q (the video pruning rate) must be in [0, 1), got {q}")
    method, frame_budgets = METHODS[_state["method"]]
    req = prepare(
        video_embeds,
        [(T, tokens_per_frame)],
        retention=1.0 - q,
        target=(count or _state["vllm_count"])(tokens_per_frame, T, q),
        validate=False,
        method=method,
        frame_budgets=frame_budgets,
    )
    # compress() without its row gather: vLLM indexes the features with the mask itself
    _, selection = pipeline.select(req, resolve(_state["backend"], video_embeds.device))
    return selection.mask


def register() -> None:
    """The ``vllm.general_plugins`` entry point. Idempotent; initialises no device."""
    if _state["registered"] or os.environ.get("VIDCOM2_VLLM", "1") == "0":
        return
    import vllm  # the plugin runs inside vLLM: vllm is imported already

    version = ".".join(vllm.__version__.split(".")[:2])
    if version not in SUPPORTED_VLLM:
        raise RuntimeError(
            f"vidcom2_kernels' vLLM plugin supports vLLM {', '.join(SUPPORTED_VLLM)}, found {vllm.__version__}; "
            "set VIDCOM2_VLLM=0 to run vLLM without it"
        )
    method = os.environ.get("VIDCOM2_VLLM_METHOD", "vidcom2")
    if method not in METHODS:
        raise ValueError(f"VIDCOM2_VLLM_METHOD must be one of {sorted(METHODS)}, got {method!r}")
    from vllm import ModelRegistry
    from vllm.multimodal.video_prune import vidcom2

    _state.update(
        method=method,
        backend=os.environ.get("VIDCOM2_VLLM_BACKEND", "auto"),
        vllm_mask=vidcom2.compute_retention_mask,
        vllm_count=vidcom2.compute_retained_tokens_count,
    )
    _replace(vidcom2.compute_retention_mask, retention_mask)
    ModelRegistry.register_model(
        "Qwen2_5_VLForConditionalGeneration", "vidcom2_kernels.integrations.vllm_models:Qwen2_5_VLVidCom2"
    )
    _fix_cpu_runner()
    _state["registered"] = True
    logger.info("vidcom2_kernels: vLLM's VidCom2 pruning runs on compress() (method %s)", method)


def _replace(original, replacement) -> None:
    """Point every loaded ``vllm`` module's name for ``original`` at ``replacement`` (modules that
    import it later get the replacement from ``video_prune.vidcom2`` itself)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("vllm") and module is not None:
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, replacement)


def _fix_cpu_runner() -> None:
    """vLLM 0.32's CPUModelRunner.load_model skips the line of GPUModelRunner.load_model that sets
    ``is_multimodal_pruning_enabled``: set it the same way after loading."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.model_executor.models.interfaces import supports_multimodal_pruning
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    load_model = CPUModelRunner.load_model
    if getattr(load_model, "_vidcom2", False):
        return

    def load_and_enable_pruning(self, *args, **kwargs):
        load_model(self, *args, **kwargs)
        mm_config = self.model_config.multimodal_config
        self.is_multimodal_pruning_enabled = (
            supports_multimodal_pruning(self.get_model())
            and mm_config is not None
            and mm_config.is_multimodal_pruning_enabled()
        )

    load_and_enable_pruning._vidcom2 = True
    CPUModelRunner.load_model = load_and_enable_pruning
