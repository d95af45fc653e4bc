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

import math
import numbers
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Mapping, NamedTuple, Optional

import numpy as np
import torch

from ..records import Request, Selection


class Scored(NamedTuple):
    """Scores (N,) float32 (low = kept first), frame uniqueness (F,) float32 (None: the scorer has
    none), non-finite videos (V,) flags (None unless validating), and per-frame statistics (F,)
    float32 a method's host plan reads (None: it has no host plan; (F,) per frame for FastVID,
    (N,) per row for HoliTom)."""

    scores: torch.Tensor
    uniqueness: Optional[torch.Tensor]
    nonfinite: Optional[torch.Tensor]
    stats: Optional[torch.Tensor] = None


#: (request, the method's kernel module on the call's backend, flags (V,) int64 to write the
#: non-finite videos into) -> Scored
Scorer = Callable[[Request, ModuleType, torch.Tensor], Scored]
#: (request) -> (F,) int64 kept count per frame, known on the host before any tensor work
Planner = Callable[[Request], np.ndarray]
#: (request, the scorer's ``stats`` float64 (the length the method's scorer gives) and the base budgets (F,) int64 (the method's own
#: or FCA's), both read to the host in the call's one read) -> ((F,) int64 kept count per frame,
#: the method's plan, carried to its refine and merge as ``Request.plan``)
HostPlanner = Callable[[Request, np.ndarray, np.ndarray], tuple[np.ndarray, Any]]
#: (request, kernel module, scores (N,), budgets (F,) int64 on the device) -> the final order keys
#: (N,) float32, once the frame budgets are known (VisionZip: dominant tokens first, then density)
Refiner = Callable[[Request, ModuleType, torch.Tensor, torch.Tensor], torch.Tensor]
#: (request, kernel module, scores (N,), the Selection, kept rows [(K, ...)] of features and
#: extras) -> (rows [(K, ...)] with the merges applied, merged (K,) bool: the rows that are
#: merges). The method documents what it does to the extras (merged alike, or the anchor's own).
Merger = Callable[[Request, ModuleType, torch.Tensor, Selection, list], tuple]
#: the method's options, all present (its defaults filled in) -> the same, checked and typed
OptionCheck = Callable[[dict], dict]


@dataclass(frozen=True)
class Method:
    """A token compressor as the pipeline runs it.

    ``kernels`` maps each backend name to the module of the method's own functions on that
    backend (``kernel_names``; None where the backend is not installed). ``budgets`` is the
    method's own per-frame plan, known on the host; None means its own budgets are VidCom2's FCA
    over the frame uniqueness (``gives_uniqueness``: its scorer computes that uniqueness itself;
    otherwise ``frame_budgets="vidcom2"`` runs VidCom2's scorer for it). ``plan`` (optional): a
    plan that depends on the features (FastVID's segments): it turns the scorer's ``stats`` and
    the base budgets into the kept count of every frame after the call's one host read, so the
    count is not known up front (``exact`` then reconciles to vLLM's counts). ``refine`` (optional)
    turns the scores into the final order keys once the budgets are known. ``merge`` None: every
    output row is an input row. ``exact_counts`` False: the method decides its own count of
    output rows (HoliTom's synthesised rows), so ``exact`` / ``target`` are refused. ``keywords``: the :func:`~vidcom2_kernels.compress` keywords only
    this method takes (DyCoke's ``quirks``). ``defaults``: its ``options=`` with their defaults,
    checked by ``check_options``; ``env``: the environment variable of each option in the
    released lmms-eval fork.
    """

    name: str
    summary: str
    kernels: Mapping[str, Optional[ModuleType]]
    kernel_names: tuple
    score: Scorer
    budgets: Optional[Planner] = None
    plan: Optional[HostPlanner] = None
    refine: Optional[Refiner] = None
    merge: Optional[Merger] = None
    gives_uniqueness: bool = False
    exact_counts: bool = True
    keywords: tuple = ()
    defaults: Mapping = field(default_factory=dict)
    check_options: Optional[OptionCheck] = None
    env: Mapping = field(default_factory=dict)

    def kernels_on(self, backend: str) -> ModuleType:
        """The method's kernel module on the backend named ``backend``."""
        module = self.kernels.get(backend)
        if module is None:
            raise RuntimeError(f"method {self.name!r} has no kernels for backend={backend!r}")
        return module


def number_option(options: dict, name: str, unit: bool = False) -> float:
    """``options[name]`` as a float: a finite number (in [0, 1] when ``unit``), else a ValueError
    naming the option."""
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"options[{name!r}] must be a finite number, got {value!r}")
    if unit and not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"options[{name!r}] must be a number in [0, 1], got {value!r}")
    return float(value)


def integer_option(options: dict, name: str) -> int:
    """``options[name]`` as an int >= 1, else a ValueError naming the option."""
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"options[{name!r}] must be an int >= 1, got {value!r}")
    return int(value)
