"""Test utilities that ship with the package (the benchmarks use them too).

- :func:`poisoned_outputs`: outputs start as NaN / -1 / True instead of uninitialised memory.
- :class:`HostReadCounter`: counts host reads of tensor data made by library code, both the
  Python-side ones (``tolist``, ``item``, ``int()``, ``bool()``, ``float()``, ``numpy()``, indexing
  with a tensor), seen by a ``TorchFunctionMode``, and data-dependent aten ops (``nonzero``,
  ``masked_select``, ``unique``, ``repeat_interleave`` without ``output_size``, ``.item()``'s
  ``_local_scalar_dense``, boolean-mask indexing), seen by a ``TorchDispatchMode``.
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .buffers import poisoned as poisoned_outputs  # noqa: F401

_PY_READS = {
    torch.Tensor.tolist: "tolist",
    torch.Tensor.item: "item",
    torch.Tensor.__int__: "int()",
    torch.Tensor.__bool__: "bool()",
    torch.Tensor.__float__: "float()",
    torch.Tensor.__index__: "index()",
    torch.Tensor.numpy: "numpy",
}
_ATEN_READS = {
    "aten::nonzero",
    "aten::nonzero_numpy",
    "aten::masked_select",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::_local_scalar_dense",
}
_TRITON_DIR = None


def _from_triton_runtime() -> bool:
    """True when the call comes from Triton's own launcher or interpreter (which copies kernel
    arguments under TRITON_INTERPRET=1; on a GPU a launch reads no tensor data)."""
    global _TRITON_DIR
    if _TRITON_DIR is None:
        try:
            import triton

            _TRITON_DIR = os.path.dirname(triton.__file__)
        except ImportError:
            _TRITON_DIR = "\0"
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(_TRITON_DIR):
            return True
        frame = frame.f_back
    return False


def _has_tensor_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) for i in items)


class _FunctionReads(TorchFunctionMode):
    def __init__(self, counter: Counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _PY_READS.get(func)
        if name is None and func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and _has_tensor_index(args[1]):
            name = "index with tensor"
        if name is not None and not _from_triton_runtime():
            self.counter[name] += 1
        return func(*args, **kwargs)


class _DispatchReads(TorchDispatchMode):
    def __init__(self, counter: Counter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        hit = name in _ATEN_READS
        if name == "aten::repeat_interleave" and kwargs.get("output_size") is None:
            hit = True
        if name.startswith("aten::index") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for i in (args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else [])
        ):
            hit = True
        if hit and not _from_triton_runtime():
            self.counter[f"aten {name.split('::')[1]}"] += 1
        return func(*args, **kwargs)


class HostReadCounter:
    """Context manager; ``.total`` is the number of host reads seen, ``.reads`` their kinds."""

    def __init__(self):
        self.reads: Counter = Counter()

    @property
    def total(self) -> int:
        return sum(self.reads.values())

    def __enter__(self):
        self._modes = [_FunctionReads(self.reads), _DispatchReads(self.reads)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        return False
