"""What a token compressor plugs into the one pipeline (:class:`Method`), and what its scorer
returns (:class:`Scored`).

A method is one folder ``methods/<name>/``: its ``__init__.py`` builds a :class:`Method` from its
pieces, ``reference.py`` is the yardstick of its kernels, and ``torch_ops.py`` / ``triton_ops.py``
hold the same functions on the fast backends (the Triton kernels themselves may live there too,
or in :mod:`vidcom2_kernels.ops` when several methods share them). The pipeline runs every method
as score -> budgets (the method's own, or VidCom2's Frame Compression Adjustment) -> select ->
gather -> merge (optional); the selection, FCA and the gather are the backends' shared stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Mapping, NamedTuple, Optional

import numpy as np
import torch

from ..records import Request


class Scored(NamedTuple):
    """Scores (N,) float32 (low = kept first), frame uniqueness (F,) float32 (None: the scorer has
    none), non-finite videos (V,) flags (None unless validating)."""

    scores: torch.Tensor
    uniqueness: Optional[torch.Tensor]
    nonfinite: Optional[torch.Tensor]


#: (request, the method's kernel module on the call's backend, flags (V,) int64 to write the
#: non-finite videos into) -> Scored
Scorer = Callable[[Request, ModuleType, torch.Tensor], Scored]
#: (request) -> (F,) int64 kept count per frame, known on the host before any tensor work
Planner = Callable[[Request], np.ndarray]
#: (request, kernel module, indices (K,) ascending, kept rows [(K, ...)] of features and extras)
#: -> (rows [(K, ...)] with the merges applied, merged (K,) bool: the rows that are merges). The
#: method documents what it does to the extras (merged alike, or left as the anchor row's).
Merger = Callable[[Request, ModuleType, torch.Tensor, list], tuple]


@dataclass(frozen=True)
class Method:
    """A token compressor as the pipeline runs it.

    ``kernels`` maps each backend name to the module of the method's own functions on that
    backend (``kernel_names``; None where the backend is not installed). ``budgets`` is the
    method's own per-frame plan, known on the host; None means its own budgets are VidCom2's FCA
    over the frame uniqueness (``gives_uniqueness``: its scorer computes that uniqueness itself;
    otherwise ``frame_budgets="vidcom2"`` runs VidCom2's scorer for it). ``merge`` None: every
    output row is an input row. ``options``: the :func:`~vidcom2_kernels.compress` keywords only
    this method takes.
    """

    name: str
    summary: str
    kernels: Mapping[str, Optional[ModuleType]]
    kernel_names: tuple
    score: Scorer
    budgets: Optional[Planner] = None
    merge: Optional[Merger] = None
    gives_uniqueness: bool = False
    options: tuple = ()

    def kernels_on(self, backend: str) -> ModuleType:
        """The method's kernel module on the backend named ``backend``."""
        module = self.kernels.get(backend)
        if module is None:
            raise RuntimeError(f"method {self.name!r} has no kernels for backend={backend!r}")
        return module
