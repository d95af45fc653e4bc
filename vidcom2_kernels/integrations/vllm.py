"""The vLLM plugin: vLLM's VidCom2 video pruning on this package's kernels.

vLLM loads ``register`` (entry point ``vllm.general_plugins: vidcom2_kernels``) in every process
it starts. It replaces vLLM's ``video_prune.vidcom2.compute_retention_mask`` (and every copy a
vLLM module imported by name, such as ``qwen3_vl``'s) with :func:`retention_mask`: the same
signature, a bool (N,) mask on the features' device with exactly vLLM's
``compute_retained_tokens_count`` True entries (the count the API process sized the prompt's
placeholders with), computed by :func:`vidcom2_kernels.compress`'s pipeline with ``target=`` that
count and ``validate=False`` (no host read), stopping before the row gather (vLLM applies the mask
itself). It also registers :mod:`.vllm_models` (VidCom2 for Qwen2.5-VL, where vLLM offers only EVS)
and, where vLLM's CPU runner is the one that never sets ``is_multimodal_pruning_enabled`` (0.32's
``CPUModelRunner``: a pruned video then crashes in ``split_with_sizes``), sets it the way the GPU
runner does.

The plugin checks the contract it hooks, not a version number (:func:`find_hooks`): the
``video_prune`` package at vLLM's old or new path, both functions' signatures, the Qwen2.5-VL
class it subclasses (read from its source, not imported), the registry, and the CPU runner. When
anything does not match, it logs one warning naming what, and leaves vLLM exactly as it is without
the plugin. It raises only for a setting the user gave (below), checked in ``register``.

Environment (read once, at ``register``):
    VIDCOM2_VLLM=1                 0: the plugin does nothing
    VIDCOM2_VLLM_METHOD=vidcom2    a registered method: vidcom2 (default) | dycoke | ...; or
                                   <method>+fca for a method with budgets of its own (VidCom2's
                                   frame budgets over its token scores, e.g. dycoke+fca) | vllm
                                   (vLLM's own mask function; the rest of the plugin stays on)
    VIDCOM2_VLLM_BACKEND=auto      compress()'s backend

Select VidCom2 in vLLM as usual: ``--video-pruning-method vidcom2 --video-pruning-rate q`` (the
pruned fraction; this package's retention is ``1 - q``). Differences from vLLM's own port:
arithmetic in float32 whatever the input dtype (vLLM computes in the input dtype, so bf16 masks
can differ on near-ties), no host read (vLLM reads the frame budgets), and one fused pass per
stage instead of a per-frame loop. What is scored is unchanged: vLLM's Qwen3-VL passes the main
features concatenated with the deepstack features, and so the plugin scores both as vLLM does.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from .. import methods, pipeline
from ..api import prepare
from ..backends import BACKENDS, resolve

logger = logging.getLogger(__name__)


def method_choices() -> dict:
    """``VIDCOM2_VLLM_METHOD`` -> (method, frame_budgets), read off the method registry: every
    method, ``<method>+fca`` for each with budgets of its own; "vllm" (None): vLLM's own mask."""
    return {
        **{name: (name, None) for name in methods.names()},
        **{f"{name}+fca": (name, "vidcom2") for name in methods.with_own_budgets()},
        "vllm": None,
    }


#: where vLLM keeps its video pruning modules, newest first (its main branch moves them under
#: ``vllm.frontend``, leaving shims at the old path)
PRUNE_PACKAGES = ("vllm.frontend.processing.multimodal.video_prune", "vllm.multimodal.video_prune")
#: the parameters of the functions the plugin replaces and calls (both modules' count functions)
MASK_PARAMS = ("video_embeds", "video_size_thw", "spatial_merge_size", "q")
COUNT_PARAMS = ("tokens_per_frame", "num_frames", "q")
#: the class :mod:`.vllm_models` subclasses, in the module it is read from (never imported here:
#: importing vLLM's model code at registration could initialise a device)
QWEN2_5_VL = ("vllm.model_executor.models.qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration")
#: vLLM 0.32's CPU runner (0.34 has another one, ``vllm.v1.worker.cpu``, that enables pruning itself)
CPU_RUNNER = "vllm.v1.worker.cpu_model_runner"

#: the plugin's settings once registered, ``hooks`` (what :func:`find_hooks` found) and ``calls``:
#: masks computed in this process
_state = {
    "registered": False,
    "method": "vidcom2",
    "backend": "auto",
    "hooks": None,
    "vllm_mask": None,
    "vllm_count": None,
    "calls": 0,
}


class Mismatch(Exception):
    """Something the plugin hooks is not what it was written against: the message says what."""


@dataclass(frozen=True)
class Hooks:
    """The parts of the running vLLM the plugin hooks, checked by :func:`find_hooks`."""

    vidcom2: ModuleType  # video_prune.vidcom2 (compute_retention_mask, compute_retained_tokens_count)
    evs: ModuleType  # video_prune.evs (its compute_retained_tokens_count sizes Qwen2.5-VL's prompts)
    cpu_runner: type | None  # a CPUModelRunner whose load_model needs the pruning flag set, or None


def retention_mask(
    video_embeds: torch.Tensor, video_size_thw, spatial_merge_size: int, q: float, *, count=None
) -> torch.Tensor:
    """vLLM's ``compute_retention_mask`` on the fused kernels. ``video_embeds`` (N, C) of one
    video, ``video_size_thw`` (T, H, W) its patch grid, ``q`` the pruned fraction in [0, 1).
    Returns a bool (N,) mask on ``video_embeds.device`` with ``count(tokens_per_frame, T, q)``
    True entries: by default vLLM's VidCom2 ``compute_retained_tokens_count``, the count the
    prompt's placeholders were sized with."""
    _state["calls"] += 1
    if _state["method"] == "vllm":
        return _state["vllm_mask"](video_embeds, video_size_thw, spatial_merge_size, q)
    T, H, W = (int(n) for n in video_size_thw)  # vLLM passes a list (a CPU tensor reads no device)
    tokens_per_frame = (H // spatial_merge_size) * (W // spatial_merge_size)
    if T * tokens_per_frame == 0:
        return torch.ones(0, dtype=torch.bool, device=video_embeds.device)
    if video_embeds.dim() != 2 or video_embeds.shape[0] != T * tokens_per_frame:
        raise ValueError(
            f"video_embeds must have shape ({T * tokens_per_frame}, C) for video_size_thw {(T, H, W)} and "
            f"spatial_merge_size {spatial_merge_size}, got {tuple(video_embeds.shape)}"
        )
    if not 0.0 <= q < 1.0:
        raise ValueError(f"q (the video pruning rate) must be in [0, 1), got {q}")
    method, frame_budgets = method_choices()[_state["method"]]
    req = prepare(
        video_embeds,
        [(T, tokens_per_frame)],
        retention=1.0 - q,
        target=(count or _state["vllm_count"])(tokens_per_frame, T, q),
        validate=False,
        method=method,
        frame_budgets=frame_budgets,
    )
    # compress() without its row gather: vLLM indexes the features with the mask itself
    _, selection = pipeline.select(req, resolve(_state["backend"], video_embeds.device))
    return selection.mask


def settings_from_env(environ=None) -> dict | None:
    """The plugin's settings from the environment (None: ``VIDCOM2_VLLM=0``). A bad value raises
    ``ValueError`` naming the variable: the one case where the plugin stops vLLM."""
    env = os.environ if environ is None else environ
    enabled = env.get("VIDCOM2_VLLM", "1")
    if enabled not in ("0", "1"):
        raise ValueError(f"VIDCOM2_VLLM must be 0 (the plugin off) or 1 (on, the default), got {enabled!r}")
    if enabled == "0":
        return None
    method = env.get("VIDCOM2_VLLM_METHOD", "vidcom2")
    choices = method_choices()
    if method not in choices:
        raise ValueError(f"VIDCOM2_VLLM_METHOD must be one of {sorted(choices)}, got {method!r}")
    if choices[method] is not None and methods.get(choices[method][0]).merge is not None:
        raise ValueError(
            f"VIDCOM2_VLLM_METHOD={method} merges tokens, but vLLM's pruning hook takes a mask of kept "
            "rows (vLLM gathers the unchanged features itself); use a method that merges nothing"
        )
    backend = env.get("VIDCOM2_VLLM_BACKEND", "auto")
    if backend not in BACKENDS:
        raise ValueError(f"VIDCOM2_VLLM_BACKEND must be one of {list(BACKENDS)}, got {backend!r}")
    return {"method": method, "backend": backend}


def register() -> None:
    """The ``vllm.general_plugins`` entry point. Idempotent; initialises no device. A vLLM whose
    hooked contract does not match gets one warning and is left untouched."""
    if _state["registered"]:
        return
    settings = settings_from_env()
    if settings is None:
        return
    import vllm  # the plugin runs inside vLLM: vllm is imported already

    try:
        found = find_hooks()
    except Exception as exc:  # a Mismatch, or anything vLLM raised while being checked
        reason = str(exc) if isinstance(exc, Mismatch) else f"{type(exc).__name__}: {exc}"
        logger.warning(
            "vidcom2_kernels: vLLM %s does not match what its vLLM plugin hooks (%s); vLLM runs without the "
            "plugin (set VIDCOM2_VLLM=0 to silence this)",
            getattr(vllm, "__version__", "?"),
            reason,
        )
        return
    if settings["backend"] != "auto":  # a backend that cannot run on this platform's tensors
        try:
            resolve(settings["backend"], torch.device(_platform().device_type))
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"VIDCOM2_VLLM_BACKEND={settings['backend']}: {exc}") from None
    _state.update(
        settings,
        hooks=found,
        vllm_mask=found.vidcom2.compute_retention_mask,
        vllm_count=found.vidcom2.compute_retained_tokens_count,
    )
    _replace(found.vidcom2.compute_retention_mask, retention_mask)
    vllm.ModelRegistry.register_model(QWEN2_5_VL[1], "vidcom2_kernels.integrations.vllm_models:Qwen2_5_VLVidCom2")
    if found.cpu_runner is not None:
        _fix_cpu_runner(found.cpu_runner)
    _state["registered"] = True
    logger.info("vidcom2_kernels: vLLM's VidCom2 pruning runs on compress() (method %s)", settings["method"])


def find_hooks() -> Hooks:
    """Check every part of the running vLLM the plugin hooks; raises :class:`Mismatch` naming the
    first part that differs from what the plugin was written against. Changes nothing."""
    vidcom2, evs = _prune_modules()
    _check_params(vidcom2, "compute_retention_mask", MASK_PARAMS)
    _check_params(vidcom2, "compute_retained_tokens_count", COUNT_PARAMS)
    _check_params(evs, "compute_retained_tokens_count", COUNT_PARAMS)
    _check_qwen2_5_vl({evs.__name__, *(f"{p}.evs" for p in PRUNE_PACKAGES)})
    from vllm import ModelRegistry
    from vllm.config.multimodal import MultiModalConfig

    if not callable(getattr(ModelRegistry, "register_model", None)):
        raise Mismatch("vllm.ModelRegistry has no register_model")
    if QWEN2_5_VL[1] not in ModelRegistry.get_supported_archs():
        raise Mismatch(f"vLLM's model registry has no {QWEN2_5_VL[1]}")
    for name in ("video_pruning_method", "is_multimodal_pruning_enabled"):
        if not hasattr(MultiModalConfig, name):
            raise Mismatch(f"vllm.config.multimodal.MultiModalConfig has no {name}")
    return Hooks(vidcom2, evs, _cpu_runner_to_fix())


def hooks() -> Hooks:
    """What :func:`register` found (checked now when the plugin is not registered in this process)."""
    return _state["hooks"] or find_hooks()


def _prune_modules() -> tuple:
    """vLLM's ``video_prune.vidcom2`` and ``video_prune.evs``, from the first package path that has them."""
    for package in PRUNE_PACKAGES:
        try:
            return importlib.import_module(f"{package}.vidcom2"), importlib.import_module(f"{package}.evs")
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not (package.startswith(missing) or missing.startswith(package)):
                raise  # a module that exists failed to import something else
    raise Mismatch(f"no video_prune.vidcom2 and video_prune.evs modules under {' or '.join(PRUNE_PACKAGES)}")


def _check_params(module: ModuleType, name: str, expected: tuple) -> None:
    function = getattr(module, name, None)
    if not callable(function):
        raise Mismatch(f"{module.__name__} has no {name}")
    params = tuple(inspect.signature(function).parameters)
    if params != expected:
        raise Mismatch(f"{module.__name__}.{name} takes ({', '.join(params)}), not ({', '.join(expected)})")


def _check_qwen2_5_vl(evs_modules: set) -> None:
    """:mod:`.vllm_models` subclasses vLLM's Qwen2.5-VL and swaps the ``compute_retention_mask``
    that its ``_postprocess_video_embeds_evs(self, video_embeds_split, video_input)`` calls, an
    import from EVS's module, and reads ``self.multimodal_config``: check all of it in the source."""
    module, cls_name = QWEN2_5_VL
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise Mismatch(f"no {module} source")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    imported = {
        (alias.asname or alias.name): node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    if imported.get("compute_retention_mask") not in evs_modules:
        raise Mismatch(f"{module} does not import compute_retention_mask from video_prune.evs")
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name), None)
    if cls is None:
        raise Mismatch(f"{module} has no class {cls_name}")
    method = next(
        (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "_postprocess_video_embeds_evs"), None
    )
    if method is None or [a.arg for a in method.args.args] != ["self", "video_embeds_split", "video_input"]:
        raise Mismatch(f"{cls_name} has no _postprocess_video_embeds_evs(self, video_embeds_split, video_input)")
    calls = [
        n
        for n in ast.walk(method)
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "compute_retention_mask"
    ]
    if not calls:
        raise Mismatch(f"{cls_name}._postprocess_video_embeds_evs does not call compute_retention_mask")
    if not any(isinstance(n, ast.Attribute) and n.attr == "multimodal_config" for n in ast.walk(cls)):
        raise Mismatch(f"{cls_name} has no multimodal_config")


def _platform():
    from vllm.platforms import current_platform

    return current_platform


def _cpu_runner_to_fix() -> type | None:
    """vLLM 0.32's ``CPUModelRunner.load_model`` skips the line of ``GPUModelRunner.load_model``
    that sets ``is_multimodal_pruning_enabled``: that runner class, where it is the one in use and
    its ``load_model`` does not set the flag itself; None otherwise."""
    if not _platform().is_cpu():
        return None
    try:
        module = importlib.import_module(CPU_RUNNER)
    except ModuleNotFoundError as exc:
        if exc.name and CPU_RUNNER.startswith(exc.name):
            return None  # the newer CPU runner (vllm.v1.worker.cpu) enables pruning itself
        raise
    runner = getattr(module, "CPUModelRunner", None)
    load_model = vars(runner).get("load_model") if isinstance(runner, type) else None
    if load_model is None:
        raise Mismatch(f"{CPU_RUNNER}.CPUModelRunner has no load_model of its own")
    if "is_multimodal_pruning_enabled" in inspect.getsource(load_model):
        return None
    from vllm.model_executor.models import interfaces

    if not callable(getattr(interfaces, "supports_multimodal_pruning", None)):
        raise Mismatch("vllm.model_executor.models.interfaces has no supports_multimodal_pruning")
    return runner


def _replace(original, replacement) -> None:
    """Point every loaded ``vllm`` module's name for ``original`` at ``replacement`` (modules that
    import it later get the replacement from ``video_prune.vidcom2`` itself)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("vllm") and module is not None:
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, replacement)


def _fix_cpu_runner(runner: type) -> None:
    """Set ``is_multimodal_pruning_enabled`` after ``runner.load_model``, as GPUModelRunner does."""
    from vllm.model_executor.models.interfaces import supports_multimodal_pruning

    load_model = runner.load_model

    def load_and_enable_pruning(self, *args, **kwargs):
        load_model(self, *args, **kwargs)
        mm_config = self.model_config.multimodal_config
        self.is_multimodal_pruning_enabled = (
            supports_multimodal_pruning(self.get_model())
            and mm_config is not None
            and mm_config.is_multimodal_pruning_enabled()
        )

    runner.load_model = load_and_enable_pruning
