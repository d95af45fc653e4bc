"""The backend registry: ``reference`` (the eager yardstick), ``torch`` (vectorised PyTorch, any
device) and ``triton`` (fused kernels: CUDA, or the CPU under ``TRITON_INTERPRET=1``). Each is a
module implementing :mod:`.contract`; :func:`resolve` is the one place a name becomes a backend.
"""

from __future__ import annotations

from types import ModuleType

import torch

from . import reference, torch_backend
from .contract import FUNCTIONS, Backend

try:
    from . import triton_backend
except ImportError:  # triton is optional (no wheel for every platform)
    triton_backend = None

#: name -> backend module (None: not installed)
REGISTRY: dict = {"reference": reference, "torch": torch_backend, "triton": triton_backend}
#: the names :func:`resolve` takes
BACKENDS = ("auto", *REGISTRY)


def resolve(name: str, device: torch.device) -> ModuleType:
    """The backend module for ``name`` and tensors on ``device``: "auto" is triton on CUDA when
    triton is installed, torch otherwise. Clear errors for unknown names, a missing triton, or
    triton asked to run on CPU tensors without the interpreter."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        name = "triton" if device.type == "cuda" and triton_backend is not None else "torch"
    backend = REGISTRY[name]
    if backend is None:
        raise RuntimeError(f"backend={name!r} needs the {name} package; install it or use 'torch'")
    if not backend.supports(device):
        raise ValueError(
            f"backend={name!r} needs CUDA tensors (features are on {device}); "
            "set TRITON_INTERPRET=1 before importing vidcom2_kernels to run the kernels on the CPU, "
            "or use backend='torch'"
        )
    return backend


def name_of(backend: ModuleType) -> str:
    """The registry name of a backend module."""
    return next(name for name, module in REGISTRY.items() if module is backend)


__all__ = ["BACKENDS", "Backend", "FUNCTIONS", "REGISTRY", "name_of", "resolve"]
