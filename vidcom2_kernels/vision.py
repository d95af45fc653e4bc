"""Visual tokens from real pixels: the Qwen2-VL vision tower of transformers, fed the way its
video processor feeds it (resize to multiples of 28, CLIP normalisation, 2-frame temporal patches
of 14x14 pixels, 2x2 spatial merge). Used by the main job and the real-video tests.

No weights can be downloaded here, so :func:`build_qwen2vl_tower` builds the tower from the
published Qwen2-VL configuration at a reduced width/depth with seeded random weights; a local
checkpoint directory gives the real one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

PATCH = 14
MERGE = 2
TEMPORAL = 2
FACTOR = PATCH * MERGE  # 28: image sides are multiples of this
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def fit_size(height: int, width: int, max_pixels: int, min_pixels: int = 4 * FACTOR * FACTOR) -> tuple[int, int]:
    """Sides rounded to multiples of 28, keeping the aspect ratio, area within [min, max] pixels."""
    h = max(FACTOR, round(height / FACTOR) * FACTOR)
    w = max(FACTOR, round(width / FACTOR) * FACTOR)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(FACTOR, math.floor(height / beta / FACTOR) * FACTOR)
        w = max(FACTOR, math.floor(width / beta / FACTOR) * FACTOR)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / FACTOR) * FACTOR
        w = math.ceil(width * beta / FACTOR) * FACTOR
    return h, w


@dataclass
class VideoPatches:
    """Processor output: ``pixel_values`` (t*h*w, 3*2*14*14) float32 and ``grid_thw`` (1, 3),
    plus the resized frames (n, H, W, 3) uint8 the patches came from."""

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor
    frames: np.ndarray

    @property
    def tokens_per_frame(self) -> int:
        """Tokens after the 2x2 merge of one temporal patch group (the score space's 'frame')."""
        _, h, w = self.grid_thw[0].tolist()
        return (h // MERGE) * (w // MERGE)

    @property
    def num_groups(self) -> int:
        return int(self.grid_thw[0, 0])


def qwen2vl_patches(frames: np.ndarray, max_pixels: int = 448 * 252) -> VideoPatches:
    """Turn RGB frames (n, H, W, 3) uint8 into Qwen2-VL video patches."""
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be (n, H, W, 3) with n >= 1, got {frames.shape}")
    H, W = fit_size(frames.shape[1], frames.shape[2], max_pixels)
    resized = np.stack([np.asarray(Image.fromarray(f).resize((W, H), Image.BICUBIC)) for f in frames])
    if len(resized) % TEMPORAL:  # the processor pads with the last frame
        resized = np.concatenate([resized, resized[-1:]])
    x = torch.from_numpy(resized).float().div_(255.0)
    x = (x - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    x = x.permute(0, 3, 1, 2)  # (n, 3, H, W)
    t, gh, gw = len(resized) // TEMPORAL, H // PATCH, W // PATCH
    x = x.reshape(t, TEMPORAL, 3, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    # order of the tower's input: temporal group, merged row, merged col, 2x2 block, then the patch
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixel_values = x.reshape(t * gh * gw, 3 * TEMPORAL * PATCH * PATCH).contiguous()
    return VideoPatches(pixel_values, torch.tensor([[t, gh, gw]]), resized)


def build_qwen2vl_tower(
    embed_dim: int = 320,
    depth: int = 8,
    num_heads: int = 5,
    hidden_size: int = 3584,
    seed: int = 0,
    dtype=torch.float32,
):
    """The Qwen2-VL vision tower from the published configuration (Qwen2-VL-7B's: embed 1280, depth
    32, 16 heads, output 3584) at a reduced width and depth, seeded random weights, eval mode."""
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    config = Qwen2VLConfig().vision_config
    config.embed_dim, config.depth, config.num_heads, config.hidden_size = embed_dim, depth, num_heads, hidden_size
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return Qwen2VisionTransformerPretrainedModel(config).to(dtype).eval()


def load_qwen2vl_tower(path: str, dtype=torch.bfloat16):
    """The vision tower of a local Qwen2-VL / Qwen2.5-VL checkpoint directory (real weights)."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
    return model.model.visual.eval(), model


@torch.no_grad()
def encode(tower, patches: VideoPatches, progress=None) -> torch.Tensor:
    """(t * h/2 * w/2, hidden) visual tokens: temporal group after group, row-major inside.

    Temporal groups are separate attention sequences in the tower, so they are encoded one at a
    time (same result, bounded memory); ``progress()`` is called after each."""
    param = next(tower.parameters())
    t, gh, gw = patches.grid_thw[0].tolist()
    rows = gh * gw
    one_group = torch.tensor([[1, gh, gw]], device=param.device)
    out = []
    for g in range(t):
        pixels = patches.pixel_values[g * rows : (g + 1) * rows].to(param.device, param.dtype)
        res = tower(pixels, grid_thw=one_group)
        out.append(res.pooler_output if hasattr(res, "pooler_output") else res)
        if progress is not None:
            progress()
    return torch.cat(out)
