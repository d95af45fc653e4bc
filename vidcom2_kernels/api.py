"""The public entry point :func:`compress`: user arguments -> a checked
:class:`~vidcom2_kernels.records.Request` -> :func:`vidcom2_kernels.pipeline.run` on the backend
:func:`vidcom2_kernels.backends.resolve` picks. The top layer: nothing in the package imports it
but the package face and the reference twins.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from . import pipeline
from .backends import BACKENDS, resolve
from .layout import FramesSpec, RetentionSpec, TargetSpec, exact_targets, parse_frames, parse_retention, parse_target
from .records import Compression, Request, check_extras, check_features, check_flag, check_method

__all__ = ["BACKENDS", "Compression", "compress", "prepare"]


def prepare(
    features,
    frames: FramesSpec,
    retention: RetentionSpec = 0.25,
    *,
    exact: bool = False,
    target: TargetSpec = None,
    validate: bool = True,
    extras: Sequence[torch.Tensor] = (),
    method: str = "vidcom2",
    frame_budgets: Optional[str] = None,
    quirks: bool = False,
) -> Request:
    """Check the arguments of :func:`compress` (before any tensor work) into a :class:`Request`."""
    check_method(method, frame_budgets, quirks)
    exact, validate = check_flag(exact, "exact"), check_flag(validate, "validate")
    fca = method == "vidcom2" or frame_budgets == "vidcom2"
    features = check_features(features)
    layout = parse_frames(frames, features.shape[0])
    ratios = parse_retention(retention, layout)
    if target is not None:
        targets = parse_target(target, layout)
    elif exact and fca:
        targets = exact_targets(layout, ratios)
    else:  # DyCoke's own counts are known on the host up front: already exact
        targets = None
    extras = check_extras(extras, features.shape[0], features.device)
    return Request(features, layout, ratios, targets, validate, extras, method, fca, bool(quirks))


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
        features,
        frames,
        retention,
        exact=exact,
        target=target,
        validate=validate,
        extras=extras,
        method=method,
        frame_budgets=frame_budgets,
        quirks=quirks,
    )
    return pipeline.run(req, resolve(backend, req.features.device))
