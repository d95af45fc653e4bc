"""The method registry: every token compressor the pipeline runs, by name.

A method is one folder here (its :class:`~.base.Method` in ``__init__.py``, its reference twin
and its kernels on each backend beside it) and one line in :data:`REGISTRY`. Everything that
names methods reads this registry: :func:`~vidcom2_kernels.compress`'s checks, the adapters'
:class:`~vidcom2_kernels.adapters.Settings` and ``COMPRESSOR``, and the vLLM plugin's
``VIDCOM2_VLLM_METHOD``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Optional

from ..records import FRAME_BUDGETS, check_flag
from . import dycoke, fastvid, holitom, vidcom2, visionzip
from .base import Method, Scored

#: name -> Method, in the order the docs list them
REGISTRY: dict = {m.name: m for m in (vidcom2.METHOD, dycoke.METHOD, visionzip.METHOD, fastvid.METHOD, holitom.METHOD)}


def names() -> tuple:
    """The registered method names."""
    return tuple(REGISTRY)


def with_own_budgets() -> tuple:
    """The methods whose own budgets are not FCA (``frame_budgets="vidcom2"`` applies to them)."""
    return tuple(name for name, m in REGISTRY.items() if m.budgets is not None)


def taking(keyword: str) -> tuple:
    """The methods that take the method-specific keyword ``keyword``."""
    return tuple(name for name, m in REGISTRY.items() if keyword in m.keywords)


def get(name: str) -> Method:
    """The registered method ``name`` (a ValueError listing the names otherwise)."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"method must be one of {names()}, got {name!r}")
    return REGISTRY[name]


def _only(methods: tuple) -> str:
    return " or ".join(f"method={m!r}" for m in methods) or "no registered method"


def check_method(method: str, frame_budgets: Optional[str], quirks: bool) -> Method:
    """The method and the options that only some methods take, checked; an option that would be
    ignored is an error. Returns the method."""
    spec = get(method)
    if frame_budgets not in FRAME_BUDGETS:
        raise ValueError(f"frame_budgets must be None or 'vidcom2', got {frame_budgets!r}")
    if frame_budgets is not None and spec.budgets is None:
        raise ValueError(
            f"frame_budgets='vidcom2' only applies to {_only(with_own_budgets())} "
            f"(method={method!r}'s own budgets are VidCom2's FCA)"
        )
    if check_flag(quirks, "quirks") and "quirks" not in spec.keywords:
        raise ValueError(f"quirks=True only applies to {_only(taking('quirks'))}")
    return spec


def check_counts(spec: Method, exact: bool, target) -> None:
    """``exact=True`` or a ``target`` for a method that decides its own count of output rows
    (:attr:`~.base.Method.exact_counts` False) is an error."""
    if (exact or target is not None) and not spec.exact_counts:
        raise ValueError(f"exact=True / target= do not apply to method={spec.name!r}: it decides its own count of rows")


def check_options(spec: Method, options: Optional[Mapping]) -> Mapping:
    """``options`` of the method ``spec`` with its defaults filled in, checked, read-only. An
    option the method does not take is an error naming what it takes."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict of the method's options, got {type(options).__name__}")
    unknown = sorted(set(options) - set(spec.defaults))
    if unknown:
        takes = ", ".join(spec.defaults) or "none"
        raise ValueError(f"options: method {spec.name!r} has no option {unknown[0]!r} (its options: {takes})")
    merged = {**spec.defaults, **options}
    return MappingProxyType(spec.check_options(merged) if spec.check_options else merged)


__all__ = [
    "Method",
    "REGISTRY",
    "Scored",
    "check_counts",
    "check_method",
    "check_options",
    "get",
    "names",
    "taking",
    "with_own_budgets",
]
