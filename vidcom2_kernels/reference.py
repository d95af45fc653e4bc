"""Reference twins of the public functions: the same arguments (without ``backend``), run on the
eager yardsticks (:mod:`vidcom2_kernels.backends.reference` and each method's ``reference.py``),
whose step functions are re-exported here for the tests' margin checks and for DyCoke's released
token order.
"""

from __future__ import annotations

from . import api, stages
from .backends.reference import attention_row, frame_scales
from .methods.dycoke.reference import dycoke_order, dycoke_similarity
from .methods.vidcom2.reference import channel_variance, gaussian_similarity


def compress(
    features,
    frames,
    retention=0.25,
    *,
    exact=False,
    target=None,
    validate=True,
    extras=(),
    method="vidcom2",
    frame_budgets=None,
    quirks=False,
    options=None,
):
    """Reference twin of :func:`vidcom2_kernels.compress` (same arguments but ``backend``)."""
    return api.compress(
        features,
        frames,
        retention,
        exact=exact,
        target=target,
        backend="reference",
        validate=validate,
        extras=extras,
        method=method,
        frame_budgets=frame_budgets,
        quirks=quirks,
        options=options,
    )


def select_channels(features, frames):
    """Reference twin of :func:`vidcom2_kernels.select_channels`."""
    return stages.select_channels(features, frames, backend="reference")


def token_scores(features, frames, keep=None):
    """Reference twin of :func:`vidcom2_kernels.token_scores`."""
    return stages.token_scores(features, frames, keep, backend="reference")


def frame_budgets(uniqueness, frames, retention=0.25):
    """Reference twin of :func:`vidcom2_kernels.frame_budgets`."""
    return stages.frame_budgets(uniqueness, frames, retention, backend="reference")


def select_tokens(scores, frames, budgets, *, target=None):
    """Reference twin of :func:`vidcom2_kernels.select_tokens`."""
    return stages.select_tokens(scores, frames, budgets, target=target, backend="reference")


def gather_rows(indices, *tensors):
    """Reference twin of :func:`vidcom2_kernels.gather_rows`."""
    return stages.gather_rows(indices, *tensors, backend="reference")


__all__ = [
    "channel_variance",
    "compress",
    "dycoke_order",
    "dycoke_similarity",
    "attention_row",
    "frame_budgets",
    "frame_scales",
    "gaussian_similarity",
    "gather_rows",
    "select_channels",
    "select_tokens",
    "token_scores",
]
