"""Test utilities that ship with the package (the benchmarks use them too).

- :func:`poisoned_outputs`: outputs start as NaN / -1 / True instead of uninitialised memory.
- :class:`HostReadCounter`: counts host reads of tensor data made by library code, both the
  Python-side ones (``tolist``, ``item``, ``int()``, ``bool()``, ``float()``, ``numpy()``, indexing
  with a tensor), seen by a ``TorchFunctionMode``, and data-dependent aten ops (``nonzero``,
  ``masked_select``, ``unique``, ``repeat_interleave`` without ``output_size``, ``.item()``'s
  ``_local_scalar_dense``, boolean-mask indexing), seen by a ``TorchDispatchMode``.
- :class:`LaunchCounter`: the Triton launches and the torch ops with a kernel of their own.
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .buffers import poisoned as poisoned_outputs  # noqa: F401

try:  # triton is optional: without it there is nothing of its to count
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    _TRITON_CLASSES = (JITFunction, InterpretedFunction)
except ImportError:
    _TRITON_CLASSES = ()

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


#: aten ops that allocate, reinterpret or read metadata: no device work of their own
_NO_DEVICE_WORK = {
    "aten::empty",
    "aten::empty_strided",
    "aten::empty_like",
    "aten::lift_fresh",
    "aten::_local_scalar_dense",
}


class _DispatchLaunches(TorchDispatchMode):
    def __init__(self, ops: list):
        super().__init__()
        self.ops = ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if not func.is_view and name not in _NO_DEVICE_WORK and not _from_triton_runtime():
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


class LaunchCounter:
    """Context manager counting the device work library code issues: ``.triton``, the names of
    the Triton kernels launched (compiled, or interpreted under ``TRITON_INTERPRET=1``: every
    launch a GPU would see), and ``.torch``, the aten ops that run a kernel of their own (views,
    allocations and the Triton runtime's own argument copies are not counted). The launches
    still run."""

    def __init__(self):
        self.triton: list = []
        self.torch: list = []

    @property
    def total(self) -> int:
        return len(self.triton) + len(self.torch)

    def __enter__(self):
        self._classes = _TRITON_CLASSES
        self._runs = [cls.run for cls in self._classes]
        counter = self

        def counting(original):
            def run(fn, *args, **kwargs):
                counter.triton.append(getattr(fn, "__name__", None) or fn.fn.__name__)
                return original(fn, *args, **kwargs)

            return run

        for cls, original in zip(self._classes, self._runs):
            cls.run = counting(original)
        self._mode = _DispatchLaunches(self.torch)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        for cls, original in zip(self._classes, self._runs):
            cls.run = original
        return False
