"""The records passed between the layers, below everything that uses them: a checked call
(:class:`Request`), what a selection returns (:class:`Selection`) and what :func:`compress`
returns (:class:`Compression`); plus the argument checks the public entry points share.

Imports only :mod:`.layout`: the backends, the pipeline and the public API all import from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import torch

from .layout import VideoLayout

FEATURE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: the integer type as wide as each feature dtype (its bit patterns: exact masking, range checks)
INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}
#: The public ``frame_budgets`` argument: None (the method's own budgets) or "vidcom2" (FCA).
FRAME_BUDGETS = (None, "vidcom2")


@dataclass(frozen=True)
class Request:
    """A checked :func:`~vidcom2_kernels.compress` call, the pipeline's only input.

    The two axes of the pipeline: ``method`` names the compressor (a registered
    :class:`~vidcom2_kernels.methods.Method`: its scorer, own budgets, merge); ``fca`` says who
    plans the frame budgets: VidCom2's Frame Compression Adjustment (True; always for VidCom2)
    or the method's own counts (False, known on the host up front, e.g. DyCoke's).
    """

    features: torch.Tensor  # (N, C)
    layout: VideoLayout
    retention: np.ndarray  # (V,) float64
    targets: Optional[np.ndarray]  # (V,) int64 kept counts in exact mode, else None
    validate: bool
    extras: tuple  # row-aligned (N, ...) tensors gathered with the features
    method: str = "vidcom2"
    fca: bool = True
    quirks: bool = False  # DyCoke: reproduce the released code's frame quirks
    options: Mapping = field(default_factory=dict)  # the method's options, defaults filled in, read-only
    plan: Any = None  # a method's host plan, once made (FastVID's segments): see Method.plan


class Selection(NamedTuple):
    """What a selection returns: ``indices`` (K,) ascending int64, ``mask`` (N,) bool, final
    ``budgets`` (F,) int64 (kept count per frame) and ``counts`` (V,) int64 (per video)."""

    indices: torch.Tensor
    mask: torch.Tensor
    budgets: torch.Tensor
    counts: torch.Tensor


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
    scores : (N,) float32, the method's token score (VidCom2: ``sv + sf``; low = kept first).
    uniqueness : (F,) float32, frame uniqueness ``-mean(sv)`` (high = more budget; a method's
        own budgets, such as DyCoke's: zeros).
    merged : (K,) bool, True for output rows that are merges of several input rows (their
        ``indices`` entry is the position of the row they were merged into); None when the method
        merges nothing, so every output row is the input row ``indices`` names (VidCom2, DyCoke).
    extras : the ``extras`` tensors of the call, gathered with the same indices (a method that
        merges says what its merge does to them).
    backend : the name of the backend that ran.
    """

    indices: torch.Tensor
    features: torch.Tensor
    mask: torch.Tensor
    budgets: torch.Tensor
    counts: torch.Tensor
    scores: torch.Tensor
    uniqueness: torch.Tensor
    merged: Optional[torch.Tensor] = None
    extras: tuple = ()
    layout: Optional[VideoLayout] = field(default=None, repr=False)
    backend: str = "reference"
    engine: Optional[ModuleType] = field(default=None, repr=False, compare=False)  # the backend module

    @torch.no_grad()
    def gather(self, *tensors: torch.Tensor) -> tuple:
        """Rows ``indices`` of each row-aligned tensor ((N, ...) -> (K, ...)), in one launch (a
        merged row gets the row it was merged into, not the merge)."""
        tensors = check_extras(tensors, self.mask.shape[0], self.mask.device)
        return tuple(self.engine.gather_rows(self.indices, tensors))

    def split(self) -> tuple:
        """The kept features split per video: a tuple of (counts[v], C) tensors (reads counts)."""
        return tuple(torch.split(self.features, self.counts.tolist()))


# ----------------------------------------------------------------------------------------- checks
def _plain(t: torch.Tensor, name: str) -> None:
    """Tensor kinds no kernel reads as they are: refused with what to do instead."""
    if t.is_nested:
        raise TypeError(f"{name} must be a regular tensor, got a nested tensor (concatenate its components first)")
    if t.is_quantized:
        raise TypeError(f"{name} must not be quantized, got {t.dtype} (dequantize() it first)")


def resolved(t: torch.Tensor) -> torch.Tensor:
    """``t`` with torch's lazy negation and conjugation applied (``z.conj().imag`` is a view whose
    values are negated only when read through torch): a copy where such a bit is set, else ``t``.
    Kernels read raw memory, so every backend gets resolved tensors."""
    return t.resolve_conj().resolve_neg()


def check_features(features, name: str = "features") -> torch.Tensor:
    """``features`` is a 2-D float16/bfloat16/float32 tensor with at least one channel; returned
    :func:`resolved`."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    _plain(features, name)
    if features.dim() != 2:
        raise ValueError(f"{name} must be 2-D (tokens, channels), got shape {tuple(features.shape)}")
    if features.dtype not in FEATURE_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {features.dtype}")
    if features.shape[1] == 0:
        raise ValueError(f"{name} must have at least one channel, got shape {tuple(features.shape)}")
    if features.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {features.layout} (call .to_dense() first)")
    if features.device.type == "meta":
        raise ValueError(f"{name} is on the meta device: it has no values to compress")
    return resolved(features)


def check_extras(extras, num_tokens: int, device: torch.device) -> tuple:
    """Row-aligned tensors: each (num_tokens, ...), dense, on ``device`` (None: none)."""
    if extras is None:
        return ()
    if isinstance(extras, torch.Tensor):
        extras = (extras,)
    if not isinstance(extras, (list, tuple)):
        raise TypeError(f"extras must be a sequence of tensors, got {type(extras).__name__}")
    out = []
    for i, t in enumerate(extras):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"extras[{i}] must be a torch.Tensor, got {type(t).__name__}")
        _plain(t, f"extras[{i}]")
        if t.dim() == 0 or t.shape[0] != num_tokens:
            raise ValueError(f"extras[{i}] must have {num_tokens} rows like features, got shape {tuple(t.shape)}")
        if t.device != device:
            raise ValueError(f"extras[{i}] is on {t.device} but features is on {device}")
        if t.layout != torch.strided:
            raise TypeError(f"extras[{i}] must be a dense tensor, got layout {t.layout}")
        out.append(resolved(t))
    return tuple(out)


def check_vector(t, name: str, length: int, floating: bool) -> torch.Tensor:
    """A (length,) floating or integer tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1 or t.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {tuple(t.shape)}")
    if floating != t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"{name} must be {'floating point' if floating else 'integer'}, got {t.dtype}")
    return t


def check_flag(value, name: str) -> bool:
    """A real bool (``exact="no"`` is truthy: refuse it rather than guess)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def raise_nonfinite(bad_videos: Sequence[int]) -> None:
    """The validation error, naming the videos whose features are not finite."""
    if len(bad_videos):
        which = ", ".join(str(v) for v in bad_videos)
        raise ValueError(
            f"features of video {which} contain NaN, Inf or values of magnitude >= 2**44 (too large for "
            "float32 statistics); pass validate=False to compress them anyway"
        )
