"""The one table of benchmark shapes: name -> (frames [(num_frames, tokens_per_frame)], channels).
Every benchmark and the AOT report pick their shapes from here by name."""

from __future__ import annotations

import torch

SHAPES = {
    "llava-ov": ([(32, 196)], 3584),  # LLaVA-OneVision-7B: 32 frames pooled to 14x14
    "llava-video": ([(64, 169)], 3584),  # LLaVA-Video-7B: 64 frames of 13x13
    "qwen2-vl": ([(16, 256)], 3584),  # Qwen2-VL-7B: 32 frames in 16 temporal groups of 16x16
    "qwen3-vl": ([(16, 300)], 4096),  # Qwen3-VL-8B
    "qwen-batch4": ([(8, 256), (4, 391), (16, 130), (6, 221)], 1536),  # a batch of mixed sizes, narrow model
    "mixed4": ([(8, 256), (4, 391), (16, 130), (6, 221)], 3584),  # qwen-batch4's videos at a 7B width
    "qwen-batch8": ([(8, 256), (16, 391), (4, 1196), (24, 130), (12, 221), (6, 352), (10, 300), (20, 156)], 3584),
    "long": ([(512, 196)], 3584),  # a long video
    "frames-8": ([(8, 196)], 3584),  # with llava-ov and long: the cost per element from 8 to 512 frames
    "frames-128": ([(128, 196)], 3584),
    "small-width": ([(32, 196)], 1152),  # a narrow vision width (SigLIP-so400m before projection)
    "smoke": ([(4, 20), (2, 9)], 64),  # seconds anywhere: CI runs the benchmarks on it once
}
#: the shapes each benchmark runs by default
CPU = ("llava-ov", "qwen-batch4")
GPU = ("llava-ov", "llava-video", "qwen-batch8", "long")
AOT = ("llava-ov", "llava-video", "qwen-batch8", "qwen3-vl", "long", "small-width")


def features(name: str, dtype=torch.float32, device="cpu", seed: int = 0) -> torch.Tensor:
    """(N, C) seeded random features of shape ``name``."""
    frames, C = SHAPES[name]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(sum(f * t for f, t in frames), C, generator=g).to(device, dtype)
