"""The one options type of the adapters (:class:`Settings`: what :func:`apply_compression` and
:func:`prune_inputs` take), and the lmms-eval convention that fills it from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from .. import methods
from ..api import compress
from ..backends import BACKENDS
from ..layout import parse_retention, parse_target
from ..records import FRAME_BUDGETS, Compression, check_flag


@dataclass(frozen=True)
class Settings:
    """How to compress, checked when made (before any model work): the arguments of
    :func:`vidcom2_kernels.compress`. ``method`` a registered method ("vidcom2", "dycoke", ...:
    :data:`vidcom2_kernels.methods.REGISTRY`); ``retention`` in (0, 1] (DyCoke: the kept fraction
    ``1 - p`` of pruned frames); ``exact`` / ``target`` exact counts; ``frame_budgets="vidcom2"``
    VidCom2's frame budgets over the method's scores; ``quirks`` DyCoke's released quirks;
    ``options`` the method's own options (VisionZip's ``dominant_ratio``, ``k_neighbors``);
    ``backend`` as in ``compress``."""

    retention: float = 0.25
    exact: bool = False
    target: Optional[object] = None
    backend: str = "auto"
    method: str = "vidcom2"
    frame_budgets: Optional[str] = None
    quirks: bool = False
    options: Optional[Mapping] = None

    def __post_init__(self):
        """Every option's values, as ``compress`` checks them, except what needs the videos (a
        per-video list's length, a target's upper bound): those are checked per call."""
        spec = methods.check_method(self.method, self.frame_budgets, self.quirks)
        methods.check_options(spec, self.options)
        methods.check_counts(spec, check_flag(self.exact, "exact"), self.target)
        check_flag(self.quirks, "quirks")
        if not isinstance(self.backend, str) or self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        parse_retention(self.retention, None)
        if self.target is not None:
            parse_target(self.target, None)

    def compress(self, features, frames, extras=()) -> Compression:
        return compress(
            features,
            frames,
            self.retention,
            exact=self.exact,
            target=self.target,
            backend=self.backend,
            extras=extras,
            method=self.method,
            frame_budgets=self.frame_budgets,
            quirks=self.quirks,
            options=self.options,
        )


ENV_FLAGS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
    "": False,
}


def settings_from_env(environ=None) -> Settings | None:
    """The lmms-eval convention read from the environment, checked: ``COMPRESSOR`` a registered
    method name (``vidcom2``, ``dycoke``, ...; unset or ``none``: None, no compression),
    ``R_RATIO`` (retention in (0, 1], default 0.25; for DyCoke the kept fraction ``1 - p`` of
    pruned frames), ``VIDCOM2_EXACT`` (1/true/yes/on for exact counts), ``FRAME_BUDGETS=vidcom2``
    (VidCom2's frame budgets over a method with budgets of its own), and the method's options
    under the released fork's names (``visionzip_dominant_ratio``, ``visionzip_k_neighbors``).
    A ValueError names the variable that is wrong."""
    env = os.environ if environ is None else environ
    method = env.get("COMPRESSOR", "").strip().lower()
    if method in ("", "none"):
        return None
    if method not in methods.REGISTRY:
        raise ValueError(f"COMPRESSOR must be one of {', '.join(methods.names())} or none, got {env['COMPRESSOR']!r}")
    text = env.get("R_RATIO", "0.25")
    try:
        retention = float(text)
    except ValueError:
        retention = float("nan")
    if not 0.0 < retention <= 1.0:
        raise ValueError(f"R_RATIO must be a number in (0, 1], got {text!r}")
    exact = env.get("VIDCOM2_EXACT", "0").strip().lower()
    if exact not in ENV_FLAGS:
        raise ValueError(f"VIDCOM2_EXACT must be 1/true/yes/on or 0/false/no/off, got {env['VIDCOM2_EXACT']!r}")
    frame_budgets = env.get("FRAME_BUDGETS", "").strip().lower() or None
    if frame_budgets not in FRAME_BUDGETS:
        raise ValueError(
            f"FRAME_BUDGETS must be unset or one of {', '.join(f for f in FRAME_BUDGETS if f)}, "
            f"got {env['FRAME_BUDGETS']!r}"
        )
    if frame_budgets is not None and method not in methods.with_own_budgets():
        which = " or ".join(f"COMPRESSOR={m}" for m in methods.with_own_budgets())
        raise ValueError(f"FRAME_BUDGETS={env['FRAME_BUDGETS']} only applies to {which}")
    spec = methods.get(method)
    options = {
        name: _env_option(env, variable, spec.defaults[name]) for name, variable in spec.env.items() if variable in env
    }
    try:
        methods.check_options(spec, options)
    except ValueError as e:  # the same check, said with the variable the user set
        message = str(e)
        for name, variable in spec.env.items():
            message = message.replace(f"options[{name!r}]", variable)
        raise ValueError(message) from None
    return Settings(
        method=method, retention=retention, exact=ENV_FLAGS[exact], frame_budgets=frame_budgets, options=options or None
    )


def _env_option(env, variable: str, default):
    """The value of ``variable`` as the type of the option's ``default`` (int or float)."""
    try:
        return type(default)(env[variable])
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ValueError(f"{variable} must be {kind}, got {env[variable]!r}") from None
