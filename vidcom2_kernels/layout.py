"""How the rows of ``features`` split into videos and frames, and the per-video parameters.

Everything here is host-side: Python ints and numpy arrays, built without reading device data
(a ``frames`` tensor on the GPU is the one exception: it is read once, see :func:`parse_frames`).
Kernels get the same facts as one packed int64 tensor (:meth:`VideoLayout.device_meta`).
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Optional, Sequence, Union

import numpy as np
import torch

#: Rows a layout can describe: row and frame offsets are int64, with headroom for their sums.
MAX_TOKENS = 2**62

FramesSpec = Union[int, Sequence[Sequence[int]], torch.Tensor]
RetentionSpec = Union[float, Sequence[float], torch.Tensor]
TargetSpec = Union[int, Sequence[int], torch.Tensor, None]


def _as_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{what} must be an int, got a bool")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an int, got {type(value).__name__}") from None
    if out <= 0:
        raise ValueError(f"{what} must be positive, got {out}")
    return out


@dataclass(frozen=True)
class VideoLayout:
    """Videos of ``num_frames[v]`` frames of ``tokens_per_frame[v]`` tokens, concatenated in order.

    Attributes are numpy int64 arrays:
    ``num_frames`` (V,), ``tokens_per_frame`` (V,), ``row_start`` (V+1,) first row of each video,
    ``frame_start`` (V+1,) first global frame index of each video.
    """

    num_frames: np.ndarray
    tokens_per_frame: np.ndarray

    @staticmethod
    def from_pairs(pairs: Sequence[tuple[int, int]]) -> "VideoLayout":
        """The layout of these (num_frames, tokens_per_frame) pairs. Layouts are interned: equal
        pairs give the same (read-only) object, so what it derives (its arrays, its cache key,
        the device arrays keyed by it) is computed once, not on every call."""
        return _interned(tuple((int(f), int(t)) for f, t in pairs))

    @property
    def num_videos(self) -> int:
        return int(self.num_frames.shape[0])

    @cached_property
    def tokens_per_video(self) -> np.ndarray:
        return _frozen(self.num_frames * self.tokens_per_frame)

    @cached_property
    def row_start(self) -> np.ndarray:
        return _frozen(np.concatenate([[0], np.cumsum(self.tokens_per_video)]).astype(np.int64))

    @cached_property
    def frame_start(self) -> np.ndarray:
        return _frozen(np.concatenate([[0], np.cumsum(self.num_frames)]).astype(np.int64))

    @cached_property
    def num_tokens(self) -> int:
        return int(self.row_start[-1])

    @cached_property
    def total_frames(self) -> int:
        return int(self.frame_start[-1])

    @cached_property
    def max_frames(self) -> int:
        """Frames of the longest video (0 without videos)."""
        return int(self.num_frames.max(initial=0))

    @cached_property
    def max_frame_tokens(self) -> int:
        """Tokens of the largest frame (0 without videos)."""
        return int(self.tokens_per_frame.max(initial=0))

    @cached_property
    def max_video_tokens(self) -> int:
        """Tokens of the largest video (0 without videos)."""
        return int(self.tokens_per_video.max(initial=0))

    @cached_property
    def frame_video(self) -> np.ndarray:
        """(F_total,) video of every frame."""
        return _frozen(np.repeat(np.arange(self.num_videos, dtype=np.int64), self.num_frames))

    @cached_property
    def frame_tokens(self) -> np.ndarray:
        """(F_total,) tokens in every frame."""
        return _frozen(self.tokens_per_frame[self.frame_video])

    @cached_property
    def frame_row_start(self) -> np.ndarray:
        """(F_total+1,) first row of every frame, then N."""
        return _frozen(np.concatenate([[0], np.cumsum(self.frame_tokens)]).astype(np.int64))

    def row_frame(self) -> np.ndarray:
        """(N,) global frame index of every row."""
        return np.repeat(np.arange(self.total_frames, dtype=np.int64), self.frame_tokens)

    def row_video(self) -> np.ndarray:
        """(N,) video index of every row."""
        return np.repeat(np.arange(self.num_videos, dtype=np.int64), self.tokens_per_video)

    def per_video_sum(self, per_frame: np.ndarray) -> np.ndarray:
        """(V,) sums of a (F_total,) per-frame array over each video's frames."""
        out = np.zeros(self.num_videos, dtype=np.asarray(per_frame).dtype)
        np.add.at(out, self.frame_video, per_frame)
        return out

    def pairs(self) -> list[tuple[int, int]]:
        return [(int(f), int(t)) for f, t in zip(self.num_frames, self.tokens_per_frame)]

    def key(self) -> tuple:
        return self._key

    @cached_property
    def _key(self) -> tuple:
        return (self.num_frames.tobytes(), self.tokens_per_frame.tobytes())


def _frozen(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only (an interned layout's arrays are shared by every call)."""
    a.flags.writeable = False
    return a


@lru_cache(maxsize=256)
def _interned(pairs: tuple) -> VideoLayout:
    arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return VideoLayout(_frozen(arr[:, 0].copy()), _frozen(arr[:, 1].copy()))


def parse_frames(frames: FramesSpec, num_tokens: Optional[int]) -> VideoLayout:
    """Turn the ``frames`` argument of :func:`vidcom2_kernels.compress` into a :class:`VideoLayout`.

    ``frames`` is an int T (one video of ``N / T`` frames), a sequence of ``(num_frames,
    tokens_per_frame)`` pairs, or an integer tensor of shape (V, 2). A tensor is read to the host
    once (no read at all when it lives on the CPU); pass a list to avoid a device sync.
    ``num_tokens=None`` skips the check that the frames add up to N (an int T is then refused).
    """
    if isinstance(frames, np.ndarray):
        if not np.issubdtype(frames.dtype, np.integer):
            raise TypeError(f"frames array must hold integers, got {frames.dtype}")
        frames = frames.tolist()
    if isinstance(frames, torch.Tensor):
        if frames.dtype.is_floating_point or frames.dtype.is_complex or frames.dtype == torch.bool:
            raise TypeError(f"frames tensor must hold integers, got {frames.dtype}")
        if frames.dim() == 0:
            frames = frames.item()
        elif frames.dim() != 2 or frames.shape[1] != 2:
            raise ValueError(
                f"frames tensor must have shape (V, 2) of (num_frames, tokens_per_frame), got {tuple(frames.shape)}"
            )
        else:
            frames = frames.tolist()
    if isinstance(frames, numbers.Integral) and not isinstance(frames, bool):
        tokens = _as_positive_int(frames, "frames (tokens per frame)")
        if num_tokens is None:
            raise TypeError("frames must be (num_frames, tokens_per_frame) pairs here, not an int")
        if num_tokens == 0:
            return VideoLayout.from_pairs([])
        if num_tokens % tokens:
            raise ValueError(f"frames={tokens} tokens per frame does not divide the {num_tokens} rows of features")
        return VideoLayout.from_pairs([(num_tokens // tokens, tokens)])
    if isinstance(frames, (str, bytes)) or not isinstance(frames, Sequence):
        raise TypeError(
            "frames must be an int, a sequence of (num_frames, tokens_per_frame) pairs or a (V, 2) "
            f"integer tensor, got {type(frames).__name__}"
        )
    pairs = []
    for v, pair in enumerate(frames):
        if isinstance(pair, (torch.Tensor, np.ndarray)):
            pair = pair.tolist()
        if not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"frames[{v}] must be a (num_frames, tokens_per_frame) pair, got {pair!r}")
        pairs.append(
            (
                _as_positive_int(pair[0], f"frames[{v}] num_frames"),
                _as_positive_int(pair[1], f"frames[{v}] tokens_per_frame"),
            )
        )
    total = sum(f * t for f, t in pairs)  # Python ints: checked before anything is int64
    if total > MAX_TOKENS:
        raise ValueError(f"frames describe {total} tokens, more than the {MAX_TOKENS} (2**62) a layout can index")
    if num_tokens is not None and total != num_tokens:
        raise ValueError(f"frames add up to {total} tokens ({pairs}) but features has {num_tokens} rows")
    return VideoLayout.from_pairs(pairs)


def _per_video(value, num_videos: Optional[int], what: str) -> list:
    """``value`` as one entry per video; ``num_videos=None``: any number of videos (a check made
    before the videos are known, such as an adapter's options)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim == 0:  # a 0-d tensor or array is one value for every video
            return [value.item()] * (1 if num_videos is None else num_videos)
        value = value.tolist()
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{what} must be a number or one per video, got a string")
    if isinstance(value, Sequence) or isinstance(value, np.ndarray):
        value = list(value)
        if num_videos is not None and len(value) != num_videos:
            raise ValueError(f"{what} has {len(value)} entries but there are {num_videos} videos")
        return value
    return [value] * (1 if num_videos is None else num_videos)


def parse_retention(retention: RetentionSpec, layout: Optional[VideoLayout]) -> np.ndarray:
    """(V,) float64 retention ratio per video, each in (0, 1] (``layout=None``: the values alone)."""
    values = _per_video(retention, None if layout is None else layout.num_videos, "retention")
    out = np.empty(len(values), dtype=np.float64)
    for v, r in enumerate(values):
        if isinstance(r, bool) or not isinstance(r, numbers.Real):
            raise TypeError(f"retention must be a float in (0, 1], got {type(r).__name__}")
        r = float(r)
        if not (0.0 < r <= 1.0):  # also rejects NaN
            raise ValueError(f"retention must be in (0, 1], got {r}" + (f" for video {v}" if len(values) > 1 else ""))
        out[v] = r
    return out


def exact_targets(layout: VideoLayout, retention: np.ndarray) -> np.ndarray:
    """(V,) kept count of exact mode: ``max(F, min(int(N_v * r), N_v))`` (vLLM's rule)."""
    n = layout.tokens_per_video
    wanted = np.floor(n.astype(np.float64) * retention).astype(np.int64)
    return np.maximum(layout.num_frames, np.minimum(wanted, n))


def parse_target(target: TargetSpec, layout: Optional[VideoLayout]) -> np.ndarray:
    """(V,) int64 explicit kept count per video, each in [F_v, N_v] (``layout=None``: the values
    alone, each at least 1)."""
    values = _per_video(target, None if layout is None else layout.num_videos, "target")
    out = np.empty(len(values), dtype=np.int64)
    for v, t in enumerate(values):
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            if isinstance(t, float) and math.isfinite(t) and t == int(t):
                t = int(t)
            else:
                raise TypeError(f"target must be an int or one int per video, got {type(t).__name__}")
        if layout is None:
            if t < 1:
                raise ValueError(f"target must be at least 1, got {t}")
        elif not (int(layout.num_frames[v]) <= t <= int(layout.tokens_per_video[v])):
            lo, hi = int(layout.num_frames[v]), int(layout.tokens_per_video[v])
            raise ValueError(f"target for video {v} must be in [num_frames, tokens] = [{lo}, {hi}], got {t}")
        out[v] = t
    return out
