"""The public entry point :func:`compress`: user arguments -> a checked
:class:`~vidcom2_kernels.records.Request` -> :func:`vidcom2_kernels.pipeline.run` on the backend
:func:`vidcom2_kernels.backends.resolve` picks. The top layer: nothing in the package imports it
but the package face and the reference twins.
"""

from __future__ import annotations

import numbers
from typing import Mapping, Optional, Sequence

import torch

from . import methods, pipeline
from .backends import BACKENDS, name_of, resolve
from .layout import FramesSpec, RetentionSpec, TargetSpec, exact_targets, parse_frames, parse_retention, parse_target
from .records import Compression, Request, check_extras, check_features, check_flag

__all__ = ["BACKENDS", "Compression", "compress", "compress_op", "prepare"]


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
    options: Optional[Mapping] = None,
) -> Request:
    """Check the arguments of :func:`compress` (before any tensor work) into a :class:`Request`."""
    spec = methods.check_method(method, frame_budgets, quirks)
    options = methods.check_options(spec, options)
    exact, validate = check_flag(exact, "exact"), check_flag(validate, "validate")
    methods.check_counts(spec, exact, target)
    fca = spec.budgets is None or frame_budgets == "vidcom2"
    features = check_features(features)
    layout = parse_frames(frames, features.shape[0])
    ratios = parse_retention(retention, layout)
    if target is not None:
        targets = parse_target(target, layout)
    elif exact and (fca or spec.plan is not None):
        targets = exact_targets(layout, ratios)
    else:  # a method's own counts are known on the host up front: already exact
        targets = None
    extras = check_extras(extras, features.shape[0], features.device)
    return Request(features, layout, ratios, targets, validate, extras, method, fca, bool(quirks), options)


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
    options: Optional[Mapping] = None,
) -> Compression:
    """Keep the most distinctive visual tokens of one or more videos (VidCom2, or another
    registered method).

    Parameters
    ----------
    features : (N, C) float16/bfloat16/float32 tensor, CPU or CUDA, any strides. The videos'
        tokens concatenated: frame after frame, row-major inside a frame.
    frames : int T (one video of N/T frames of T tokens), a sequence of ``(num_frames,
        tokens_per_frame)`` pairs, or a (V, 2) integer tensor (read to the host once).
    retention : float in (0, 1], or one per video. Fraction of tokens kept.
    exact : keep exactly ``max(F, min(int(N_v * r), N_v))`` tokens per video (vLLM's rule), so the
        output size is known before the call and no host sync is needed (with ``validate=False``).
        DyCoke's and VisionZip's own per-frame counts are known up front anyway, so there ``exact``
        changes nothing; FastVID's depend on its segments, so there it reconciles to that count.
    target : int or one int per video in ``[F_v, N_v]``: explicit kept counts; implies ``exact``.
    backend : "auto" (triton on CUDA, torch otherwise), "triton", "torch" or "reference".
    validate : raise ``ValueError`` naming the video when its features hold NaN or Inf. Checked on
        the device and read back together with the kept counts (no extra sync).
    extras : row-aligned (N, ...) tensors (e.g. Qwen3-VL deepstack features) gathered with the same
        indices, in the same launch as ``features``; returned in ``Compression.extras``.
    method : a name of :data:`vidcom2_kernels.methods.REGISTRY`: "vidcom2" (default), "dycoke"
        (DyCoke's temporal token merging: ``retention`` is then the kept fraction ``1 - p`` of
        every frame but a window's first; see :mod:`vidcom2_kernels.methods.dycoke.plan`),
        "visionzip" or "fastvid" (both merge: see ``Compression.merged``).
    frame_budgets : None (the method's own per-frame counts) or "vidcom2": VidCom2's Frame
        Compression Adjustment over the method's token scores (for a method whose own budgets
        are not FCA already).
    quirks : with ``method="dycoke"``, reproduce the released DyCoke code's frame quirks.
    options : the method's own options (its ``defaults`` in the registry; e.g. VisionZip's
        ``{"dominant_ratio": 0.6, "k_neighbors": 5}``, FastVID's ``dyseg_c`` ... ``dtm_beta``);
        None: its defaults.

    Returns
    -------
    Compression
        ``indices`` (K,) ascending, ``features`` (K, C), ``mask`` (N,), ``budgets`` (F,),
        ``counts`` (V,), ``merged`` (K,) or None, plus the scores behind the choice.

    Examples
    --------
    >>> x = torch.randn(8 * 196, 64)
    >>> out = compress(x, 196, retention=0.25)        # one video, 8 frames of 196 tokens
    >>> out.features.shape[0] == int(out.counts.sum())
    True
    """
    if torch.compiler.is_compiling():  # one opaque op in the graph: see compress_op
        return _compress_traced(
            features,
            frames,
            retention,
            exact,
            target,
            backend,
            validate,
            extras,
            method,
            frame_budgets,
            quirks,
            options,
        )
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
        options=options,
    )
    return pipeline.run(req, resolve(backend, req.features.device))


# ---------------------------------------------------------------------------- torch.library op
# Under torch.compile, compress() is one custom op, ``torch.ops.vidcom2_kernels.compress``: its
# real implementation is the eager compress() (any backend, its kernels and host logic opaque to
# the compiler), its fake implementation gives every output's exact size from the host-side
# arguments alone (K is known in exact mode and with a method's own counts; otherwise an unbacked
# size). ``merged`` travels as a list of no tensor (the method merges nothing) or one.
# Arguments travel as schema types: frames as flat (num_frames, tokens_per_frame) pairs, one
# retention per video (or one for all), target as [] (none), one int, or one per video.

_OUTPUTS = ("indices", "features", "mask", "budgets", "counts", "scores", "uniqueness")


@torch.library.custom_op("vidcom2_kernels::compress", mutates_args=())
def compress_op(
    features: torch.Tensor,
    extras: list[torch.Tensor],
    frames: list[int],
    retention: list[float],
    target: list[int],
    exact: bool,
    backend: str,
    validate: bool,
    method: str,
    frame_budgets: Optional[str],
    quirks: bool,
    option_values: list[float],
) -> tuple[
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    list[torch.Tensor],
    list[torch.Tensor],
]:
    """:func:`compress` as a torch.library op: the seven tensors of :class:`Compression` in the
    order of ``_OUTPUTS``, then ``merged`` as a list ([] for None), then the gathered ``extras``.
    Outputs never alias the inputs."""
    req = _op_request(
        features, extras, frames, retention, target, exact, validate, method, frame_budgets, quirks, option_values
    )
    out = pipeline.run(req, resolve(backend, req.features.device))
    inputs = {t.untyped_storage().data_ptr() for t in (features, *extras)}
    merged = [] if out.merged is None else [out.merged]
    fresh = [t.clone() if t.untyped_storage().data_ptr() in inputs else t for t in _tensors(out) + merged]
    named, kept_extras = fresh[: len(_OUTPUTS)], fresh[len(_OUTPUTS) : len(fresh) - len(merged)]
    return (*named, fresh[len(fresh) - len(merged) :], kept_extras)


@compress_op.register_fake
def _compress_fake(
    features, extras, frames, retention, target, exact, backend, validate, method, frame_budgets, quirks, option_values
):
    req = _op_request(
        features, extras, frames, retention, target, exact, validate, method, frame_budgets, quirks, option_values
    )
    N, F, V = req.layout.num_tokens, req.layout.total_frames, req.layout.num_videos
    K = pipeline.known_kept(req)
    if K is None:  # FCA budgets or a host plan, not exact: the size depends on the features
        # at least a token a frame, or with a host plan (FastVID) a token a video
        fewest = V if methods.get(method).plan is not None else F
        K = torch.library.get_ctx().new_dynamic_size(min=min(fewest, N), max=N)
    i64, f32 = torch.int64, torch.float32
    merges = methods.get(method).merge is not None
    return (
        features.new_empty(K, dtype=i64),
        features.new_empty(K, *features.shape[1:]),
        features.new_empty(N, dtype=torch.bool),
        features.new_empty(F, dtype=i64),
        features.new_empty(V, dtype=i64),
        features.new_empty(N, dtype=f32),
        features.new_empty(F, dtype=f32),
        [features.new_empty(K, dtype=torch.bool)] if merges else [],
        [t.new_empty(K, *t.shape[1:]) for t in extras],
    )


def _op_request(
    features, extras, frames, retention, target, exact, validate, method, frame_budgets, quirks, option_values
):
    """The op's schema-typed arguments back into a checked :class:`Request`. The method's options
    travel as floats in the order of its defaults and come back in the types of its defaults."""
    pairs = [frames[i : i + 2] for i in range(0, len(frames), 2)]
    defaults = methods.get(method).defaults
    options = {name: type(default)(v) for (name, default), v in zip(defaults.items(), option_values)}
    return prepare(
        features,
        pairs,
        retention[0] if len(retention) == 1 else retention,
        exact=exact,
        target=None if not target else target[0] if len(target) == 1 else target,
        validate=validate,
        extras=extras,
        method=method,
        frame_budgets=frame_budgets,
        quirks=quirks,
        options=options,
    )


def _tensors(out: Compression) -> list:
    return [getattr(out, name) for name in _OUTPUTS] + list(out.extras)


def _schema_list(value, kind, name: str) -> list:
    """An int/float or a sequence of them as a list; tensors are refused (reading one would be a
    host sync in the middle of the graph)."""
    if isinstance(value, torch.Tensor):
        raise TypeError(f"under torch.compile, {name} must be a Python number or list, not a tensor")
    return [kind(v) for v in value] if isinstance(value, Sequence) else [kind(value)]


def _compress_traced(
    features, frames, retention, exact, target, backend, validate, extras, method, frame_budgets, quirks, options
):
    """compress() while torch.compile traces it: the arguments become the op's schema types
    (plain Python the compiler folds away), the op runs, and its outputs become a Compression."""
    engine = resolve(backend, features.device)
    if isinstance(frames, numbers.Integral) and not isinstance(frames, bool):
        frames = [(features.shape[0] // frames if frames > 0 else 0, frames)]
    if isinstance(frames, torch.Tensor) or not isinstance(frames, Sequence):
        raise TypeError("under torch.compile, frames must be an int or (num_frames, tokens_per_frame) pairs")
    flat = [int(n) for pair in frames for n in pair]
    target = [] if target is None else _schema_list(target, int, "target")
    retention = _schema_list(retention, float, "retention")
    spec = methods.check_method(method, frame_budgets, quirks)
    values = [float(v) for v in methods.check_options(spec, options).values()]  # in the order of its defaults
    *tensors, merged, kept_extras = compress_op(
        features, list(extras), flat, retention, target, exact, backend, validate, method, frame_budgets, quirks, values
    )
    return Compression(
        *tensors,
        merged=merged[0] if merged else None,
        extras=tuple(kept_extras),
        backend=name_of(engine),
        engine=engine,
    )
