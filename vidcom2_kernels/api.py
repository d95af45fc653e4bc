"""The public entry points: argument checking, backend choice, and the result type.

Every backend (``reference``, ``torch``, ``triton``) implements the same five stages and a fused
``compress``; this module turns user arguments into a :class:`~vidcom2_kernels.layout.VideoLayout`
plus per-video numpy arrays, picks the backend, and hands over.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from .layout import (
    FramesSpec,
    RetentionSpec,
    TargetSpec,
    VideoLayout,
    exact_targets,
    parse_frames,
    parse_retention,
    parse_target,
)

FEATURE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BACKENDS = ("auto", "triton", "torch", "reference")
METHODS = ("vidcom2", "dycoke")
FRAME_BUDGETS = (None, "vidcom2")


@dataclass
class Compression:
    """What :func:`compress` returns. K = kept tokens, N = input tokens, F = frames, V = videos.

    Attributes
    ----------
    indices : (K,) int64, ascending global row indices of the kept tokens.
    features : (K, C) the kept rows, in the input dtype.
    mask : (N,) bool, True for kept rows.
    budgets : (F,) int64, final kept count of every frame (after exact-mode reconciling).
    counts : (V,) int64, kept count of every video.
    scores : (N,) float32, redundancy score ``sv + sf`` of every token (low = kept first).
    uniqueness : (F,) float32, frame uniqueness ``-mean(sv)`` (high = more budget).
    extras : the ``extras`` tensors of the call, gathered with the same indices.
    """

    indices: torch.Tensor
    features: torch.Tensor
    mask: torch.Tensor
    budgets: torch.Tensor
    counts: torch.Tensor
    scores: torch.Tensor
    uniqueness: torch.Tensor
    extras: tuple = ()
    layout: Optional[VideoLayout] = field(default=None, repr=False)
    backend: str = "reference"

    @torch.no_grad()
    def gather(self, *tensors: torch.Tensor) -> tuple:
        """Rows ``indices`` of each row-aligned tensor ((N, ...) -> (K, ...)), in one launch."""
        tensors = check_extras(tensors, self.mask.shape[0], self.mask.device)
        return tuple(_backend_module(self.backend).gather_rows(self.indices, tensors))

    def split(self) -> tuple:
        """The kept features split per video: a tuple of (counts[v], C) tensors (reads counts)."""
        return tuple(torch.split(self.features, self.counts.tolist()))


# ----------------------------------------------------------------------------------------- checks
def check_features(features, name: str = "features", allow_any_float: bool = False) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"{name} must be 2-D (tokens, channels), got shape {tuple(features.shape)}")
    if not features.dtype.is_floating_point or (
        not allow_any_float and features.dtype not in FEATURE_DTYPES
    ):
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {features.dtype}")
    if features.shape[1] == 0:
        raise ValueError(f"{name} must have at least one channel, got shape {tuple(features.shape)}")
    return features


def check_extras(extras, num_tokens: int, device: torch.device) -> tuple:
    if isinstance(extras, torch.Tensor):
        extras = (extras,)
    out = []
    for i, t in enumerate(extras):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"extras[{i}] must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() == 0 or t.shape[0] != num_tokens:
            raise ValueError(
                f"extras[{i}] must have {num_tokens} rows like features, got shape {tuple(t.shape)}"
            )
        if t.device != device:
            raise ValueError(f"extras[{i}] is on {t.device} but features is on {device}")
        out.append(t)
    return tuple(out)


def resolve_backend(backend: str, device: torch.device) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' needs the triton package; install it or use 'torch'")
        from .ops import common

        if device.type != "cuda" and not common.is_interpreter():
            raise ValueError(
                f"backend='triton' needs CUDA tensors (features are on {device}); "
                "set TRITON_INTERPRET=1 to run the kernels on the CPU, or use backend='torch'"
            )
    return backend


def triton_available() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def _backend_module(name: str):
    module = {"reference": "reference", "torch": "torch_backend", "triton": "triton_backend"}[name]
    return importlib.import_module(f"vidcom2_kernels.{module}")


@dataclass
class Request:
    """A checked :func:`compress` call: the layout and per-video parameters as numpy arrays."""

    features: torch.Tensor
    layout: VideoLayout
    retention: np.ndarray  # (V,) float64
    targets: Optional[np.ndarray]  # (V,) int64 in exact mode, else None
    validate: bool
    extras: tuple
    backend: str
    method: str = "vidcom2"
    frame_budgets: Optional[str] = None  # "vidcom2": VidCom2's FCA budgets over the method's scores
    quirks: bool = False  # DyCoke: reproduce the released code's frame quirks

    @property
    def dycoke_fca(self) -> bool:
        return self.method == "dycoke" and self.frame_budgets == "vidcom2"


def prepare(
    features,
    frames: FramesSpec,
    retention: RetentionSpec = 0.25,
    *,
    exact: bool = False,
    target: TargetSpec = None,
    backend: str = "auto",
    validate: bool = True,
    extras: Sequence[torch.Tensor] = (),
    method: str = "vidcom2",
    frame_budgets: Optional[str] = None,
    quirks: bool = False,
) -> Request:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if frame_budgets not in FRAME_BUDGETS:
        raise ValueError(f"frame_budgets must be None or 'vidcom2', got {frame_budgets!r}")
    if quirks and method != "dycoke":
        raise ValueError("quirks=True only applies to method='dycoke'")
    features = check_features(features)
    layout = parse_frames(frames, features.shape[0])
    ratios = parse_retention(retention, layout)
    if target is not None:
        targets = parse_target(target, layout)
    elif exact and method == "dycoke" and frame_budgets is None:
        targets = None  # DyCoke's own counts are known on the host up front: already exact
    elif exact:
        targets = exact_targets(layout, ratios)
    else:
        targets = None
    extras = check_extras(extras, features.shape[0], features.device)
    return Request(
        features, layout, ratios, targets, bool(validate), extras, resolve_backend(backend, features.device),
        method, frame_budgets, bool(quirks),
    )


def empty_result(req: Request) -> Compression:
    x = req.features
    dev = x.device
    return Compression(
        indices=torch.empty(0, dtype=torch.int64, device=dev),
        features=x[:0],
        mask=torch.zeros(x.shape[0], dtype=torch.bool, device=dev),
        budgets=torch.empty(0, dtype=torch.int64, device=dev),
        counts=torch.zeros(req.layout.num_videos, dtype=torch.int64, device=dev),
        scores=torch.empty(0, dtype=torch.float32, device=dev),
        uniqueness=torch.empty(0, dtype=torch.float32, device=dev),
        extras=tuple(t[:0] for t in req.extras),
        layout=req.layout,
        backend=req.backend,
    )


def raise_nonfinite(bad_videos: Sequence[int]) -> None:
    if len(bad_videos):
        which = ", ".join(str(v) for v in bad_videos)
        raise ValueError(
            f"features of video {which} contain NaN or Inf (or values too large for float32 "
            "statistics); pass validate=False to compress them anyway"
        )


# ----------------------------------------------------------------------------------------- public
@torch.no_grad()  # inference only: no autograd graph, and inputs that require grad are fine
def compress(
    features: torch.Tensor,
    frames: FramesSpec,
    retention: RetentionSpec = 0.25,
    *,
    exact: bool = False,
    target: TargetSpec = None,
    backend: str = "auto",
    validate: bool = True,
    extras: Sequence[torch.Tensor] = (),
    method: str = "vidcom2",
    frame_budgets: Optional[str] = None,
    quirks: bool = False,
) -> Compression:
    """Keep the most distinctive visual tokens of one or more videos (VidCom2, or DyCoke).

    Parameters
    ----------
    features : (N, C) float16/bfloat16/float32 tensor, CPU or CUDA, any strides. The videos'
        tokens concatenated: frame after frame, row-major inside a frame.
    frames : int T (one video of N/T frames of T tokens), a sequence of ``(num_frames,
        tokens_per_frame)`` pairs, or a (V, 2) integer tensor (read to the host once).
    retention : float in (0, 1], or one per video. Fraction of tokens kept.
    exact : keep exactly ``max(F, min(int(N_v * r), N_v))`` tokens per video (vLLM's rule), so the
        output size is known before the call and no host sync is needed (with ``validate=False``).
        DyCoke's own per-frame counts are known up front anyway, so there ``exact`` changes nothing.
    target : int or one int per video in ``[F_v, N_v]``: explicit kept counts; implies ``exact``.
    backend : "auto" (triton on CUDA, torch otherwise), "triton", "torch" or "reference".
    validate : raise ``ValueError`` naming the video when its features hold NaN or Inf. Checked on
        the device and read back together with the kept counts (no extra sync).
    extras : row-aligned (N, ...) tensors (e.g. Qwen3-VL deepstack features) gathered with the same
        indices, in the same launch as ``features``; returned in ``Compression.extras``.
    method : "vidcom2" (default) or "dycoke" (DyCoke's temporal token merging: ``retention`` is
        then the kept fraction ``1 - p`` of every frame but a window's first; see
        :mod:`vidcom2_kernels.dycoke`).
    frame_budgets : None (the method's own per-frame counts) or "vidcom2": VidCom2's Frame
        Compression Adjustment over the method's token scores.
    quirks : with ``method="dycoke"``, reproduce the released DyCoke code's frame quirks.

    Returns
    -------
    Compression
        ``indices`` (K,) ascending, ``features`` (K, C), ``mask`` (N,), ``budgets`` (F,),
        ``counts`` (V,), plus the scores behind the choice.

    Examples
    --------
    >>> x = torch.randn(8 * 196, 64)
    >>> out = compress(x, 196, retention=0.25)        # one video, 8 frames of 196 tokens
    >>> out.features.shape[0] == int(out.counts.sum())
    True
    """
    req = prepare(
        features, frames, retention, exact=exact, target=target, backend=backend,
        validate=validate, extras=extras, method=method, frame_budgets=frame_budgets, quirks=quirks,
    )
    if req.layout.num_tokens == 0:
        return empty_result(req)
    return _backend_module(req.backend).compress_request(req)
