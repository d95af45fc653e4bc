"""Output allocation shared by the torch and triton backends, host-to-device copies that never
wait for the GPU, and the thread-safe cache of per-layout device metadata.

Tests switch on *poisoning* (:func:`vidcom2_kernels.testing.poisoned_outputs`): every output is
then filled with NaN (floats), -1 (integers) or True (bools) instead of left uninitialised, so an
element a kernel forgot to write shows up as a wrong value instead of passing by luck.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Callable, Hashable

import numpy as np
import torch

_POISON = False


@contextlib.contextmanager
def poisoned(enabled: bool = True):
    global _POISON
    before, _POISON = _POISON, enabled
    try:
        yield
    finally:
        _POISON = before


def new_output(shape, dtype: torch.dtype, device) -> torch.Tensor:
    """``torch.empty``, or a poisoned tensor while :func:`poisoned` is active."""
    if isinstance(shape, int):
        shape = (shape,)
    if not _POISON:
        return torch.empty(shape, dtype=dtype, device=device)
    if dtype.is_floating_point:
        value = float("nan")
    elif dtype == torch.bool:
        value = True
    else:
        value = -1
    return torch.full(shape, value, dtype=dtype, device=device)


def to_device(host: np.ndarray, device) -> torch.Tensor:
    """A host array as a tensor on ``device``; on CUDA through pinned memory and ``non_blocking``,
    so the copy never waits for the GPU (a copy from pageable memory synchronises the stream)."""
    t = torch.from_numpy(np.ascontiguousarray(host))
    return t.pin_memory().to(device, non_blocking=True) if torch.device(device).type == "cuda" else t.to(device)


class DeviceCache:
    """A small LRU of per-layout device metadata, safe under threads. A miss builds outside the lock
    (the build copies to the device; two threads missing at once may both build, and the first one
    stored is the one every caller gets); lookups, inserts and evictions happen under it.
    Entries used while a CUDA graph is being captured are kept for the life of the process (the
    graph reads their memory at every replay), outside the LRU's size."""

    def __init__(self, size: int):
        self.size, self.items, self.kept, self.lock = size, OrderedDict(), {}, threading.Lock()

    def get(self, key: Hashable, build: Callable[[], object], device=None):
        keep = capturing(device)
        with self.lock:
            hit = self.items.get(key) or self.kept.get(key)
            if hit is not None:
                if key in self.items:
                    self.items.move_to_end(key)
                if keep:
                    self.kept[key] = hit
                return hit
        value = build()
        with self.lock:
            value = self.kept.get(key) or self.items.setdefault(key, value)
            if key in self.items:
                self.items.move_to_end(key)
            if keep:
                self.kept[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


def capturing(device) -> bool:
    """Whether ``device`` is a CUDA device whose current stream is capturing a CUDA graph."""
    return device is not None and torch.device(device).type == "cuda" and torch.cuda.is_current_stream_capturing()
