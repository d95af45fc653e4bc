"""Run lmms-eval with VidCom2 (or another registered method: DyCoke, VisionZip), the upstream way:
``COMPRESSOR=vidcom2 R_RATIO=0.25``.

    COMPRESSOR=vidcom2 R_RATIO=0.25 accelerate launch --num_processes=8 -m vidcom2_kernels.adapters.lmms_eval \\
        --model qwen2_vl --model_args pretrained=Qwen/Qwen2-VL-7B-Instruct --tasks videomme --batch_size 1

Every argument goes to lmms-eval's own command line, unchanged. In each process the launcher
wraps the one place lmms-eval builds the model it evaluates (``lmms.create_from_arg_string``):
right after lmms-eval's model class has loaded its transformers model, :func:`apply_from_env`
compresses that model's ``generate`` (the adapter is chosen by ``config.model_type``). It stops
with a one-line error, exit code 2, before any evaluation when the environment is wrong, when the
``--model`` cannot be compressed (lmms-eval's ``llava_onevision`` and ``llava_vid`` load the
LLaVA-NeXT package's classes, not transformers'), or when the model lmms-eval loaded has no
adapter. lmms-eval exits 0 even when a generation raised; the launcher exits 1 if a compressed
``generate`` raised, and prints each process's token totals at the end. ``COMPRESSOR`` unset or
``none``: plain lmms-eval. lmms-eval is not a dependency of this package (see the README).

Why not lmms-eval's ``lmms_eval.models`` entry points: they register model names. Making the
built-in ``--model qwen2_vl`` compress would mean overriding built-in names from an environment
variable inside lmms-eval's registry setup, which downgrades any error there to a warning, so a
mistake would silently evaluate the uncompressed model.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import os
import runpy
import sys
from pathlib import Path
from types import ModuleType

from .apply import apply_from_env
from .registry import ADAPTERS, LMMS_EVAL_MODELS
from .settings import Settings, settings_from_env

# lmms-eval model names whose classes are not transformers' (so no adapter can reach them)
NOT_TRANSFORMERS = {
    "llava_onevision": "loads the LLaVA-NeXT package's own LLaVA-OneVision class",
    "llava_vid": "loads the LLaVA-NeXT package's own LLaVA-Video class",
}
TRANSFORMERS_ROUTE = "use --model llava_hf --force_simple with a transformers LLaVA-OneVision/LLaVA-Video checkpoint"
SUPPORTED_NAMES = ", ".join(LMMS_EVAL_MODELS)
#: lmms-eval modules that reach into filelock's internals on every run (0.7.3's evaluator imports
#: ``filelock._api``, which filelock 4.3 removed: each run then exits 0 with no answers), and the fix
FILELOCK_USERS = ("lmms_eval.evaluator",)
FILELOCK_FIX = 'pip install "filelock<4.3"'


class LaunchError(SystemExit):
    """A one-line reason to stop before (or instead of) evaluating: :func:`main` prints it and exits
    with code 2. A SystemExit, so lmms-eval's ``except Exception`` around an evaluation cannot
    swallow it."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = f"vidcom2 lmms-eval launcher: {message}"


def model_name(argv: list) -> str | None:
    """The value of lmms-eval's ``--model`` in ``argv`` (``--model X`` or ``--model=X``)."""
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return None


def check_launch(argv: list, environ=None) -> Settings | None:
    """Everything that can be checked before lmms-eval starts: lmms-eval is installed, the
    environment's settings, and the ``--model`` name. Returns the settings (None: no compression)."""
    if importlib.util.find_spec("lmms_eval") is None:
        raise LaunchError("lmms-eval is not installed: pip install lmms-eval (keep your torch; README, lmms-eval)")
    missing = [name for module in FILELOCK_USERS for name in missing_filelock_names(module)]
    if missing:
        raise LaunchError(
            f"lmms-eval {_version('lmms-eval')} uses {', '.join(missing)}, which filelock "
            f"{getattr(_filelock_module('filelock'), '__version__', _version('filelock'))} "
            f"does not have (every evaluation would fail and record no answers): {FILELOCK_FIX}"
        )
    try:
        settings = settings_from_env(environ)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    name = model_name(argv)
    if settings is not None and name in NOT_TRANSFORMERS:
        raise LaunchError(f"--model {name} cannot be compressed: it {NOT_TRANSFORMERS[name]}; {TRANSFORMERS_ROUTE}")
    if settings is not None and name == "llava_hf" and "--force_simple" not in argv:
        print(
            "vidcom2 lmms-eval launcher: note: lmms-eval's chat llava_hf fails on video-only prompts; "
            "add --force_simple for video tasks",
            file=sys.stderr,
        )
    return settings


def missing_filelock_names(module: str) -> list:
    """The filelock modules and module attributes that ``module``'s source imports or reads
    (``import filelock._api as f`` ... ``f.FileLockMeta``) and the installed filelock lacks. Reads
    the source; imports only filelock."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return []
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    aliases, missing = {}, []  # local name -> filelock module
    for node in ast.walk(tree):
        imported = []
        if isinstance(node, ast.Import):
            imported = [(a.name, a.asname or a.name.split(".")[0], a.asname is not None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported = [(f"{node.module}.{a.name}", a.asname or a.name, True) for a in node.names]
        for name, local, bound in imported:
            if name.split(".")[0] != "filelock":
                continue
            if _filelock_module(name) is not None:
                aliases[local] = name if bound else "filelock"
                continue
            parent, _, attr = name.rpartition(".")  # `from filelock import X`: X a name in filelock
            owner = _filelock_module(parent)
            if owner is None or not hasattr(owner, attr):
                missing.append(name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            owner = _filelock_module(aliases[node.value.id])
            if owner is not None and not hasattr(owner, node.attr):
                missing.append(f"{aliases[node.value.id]}.{node.attr}")
    return sorted(set(missing))


def _filelock_module(name: str) -> ModuleType | None:
    """The module ``name`` of filelock, imported, or None where it does not exist."""
    try:
        return importlib.import_module(name)
    except (ImportError, ValueError):  # ValueError: an empty name
        return None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


class Compressing:
    """Wraps ``lmms.create_from_arg_string`` so that the model lmms-eval builds is compressed;
    ``handles`` collects the handles (one per model built). ``remove()`` restores lmms-eval."""

    def __init__(self, lmms_class):
        self.lmms_class, self.handles = lmms_class, []
        self.original = lmms_class.__dict__["create_from_arg_string"]
        create = self.original.__func__

        def create_from_arg_string(cls, *args, **kwargs):
            lm = create(cls, *args, **kwargs)
            self.handles.append(self.compress(lm))
            return lm

        lmms_class.create_from_arg_string = classmethod(create_from_arg_string)

    @staticmethod
    def compress(lm):
        """Apply the environment's compression to the transformers model inside lmms-eval's ``lm``
        (its ``model`` attribute, unwrapped from accelerate by lmms-eval's own property)."""
        model = getattr(lm, "model", None)
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in ADAPTERS:
            loaded = type(model).__name__ if model is not None else "no transformers model"
            raise LaunchError(
                f"lmms-eval's {type(lm).__name__} loaded {loaded} (model_type {model_type!r}), which VidCom2 has "
                f"no adapter for; adapters: {', '.join(sorted(ADAPTERS))}; lmms-eval names known to work: "
                f"{SUPPORTED_NAMES}"
            )
        return apply_from_env(model)

    def remove(self) -> None:
        self.lmms_class.create_from_arg_string = self.original


def summary(settings: Settings, handles: list) -> str:
    """One line per process: the settings and the video tokens of all compressed calls."""
    rank = os.environ.get("RANK", "0")
    before = sum(h.video_tokens_before for h in handles)
    after = sum(h.video_tokens_after for h in handles)
    calls = sum(h.calls for h in handles)
    what = f"{settings.method}, retention {settings.retention:g}{', exact' if settings.exact else ''}"
    what += "".join(f", {name} {value:g}" for name, value in (settings.options or {}).items())
    share = f" ({100.0 * after / before:.1f}%)" if before else ""
    return f"vidcom2 [rank {rank}] {what}: {calls} generate() calls with video, video tokens {before} -> {after}{share}"


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in ([], ["-h"], ["--help"]):
        print(__doc__.strip() + "\n\nlmms-eval's own options: python -m lmms_eval eval --help")
        return
    try:
        launch(argv)
    except LaunchError as exc:
        print(exc.message, file=sys.stderr)
        raise SystemExit(2) from None


def launch(argv: list) -> None:
    settings = check_launch(argv)
    if settings is None:  # plain lmms-eval
        return run_lmms_eval(argv)
    from lmms_eval.api.model import lmms  # lmms-eval is optional: imported only when launching it

    hook = Compressing(lmms)
    code = 0
    try:
        run_lmms_eval(argv)
    except LaunchError:
        raise
    except SystemExit as exc:  # lmms-eval's own sys.exit(0) at the end of a run
        code = exc.code
    finally:
        hook.remove()
    print(summary(settings, hook.handles), file=sys.stderr)
    failures = sum(h.failures for h in hook.handles)
    if failures:
        raise SystemExit(
            f"vidcom2 lmms-eval launcher: {failures} compressed generate() call(s) raised (see the "
            "tracebacks above); lmms-eval itself exits 0 in that case"
        )
    if code not in (None, 0):
        raise SystemExit(code)


def run_lmms_eval(argv: list) -> None:
    """lmms-eval's ``python -m lmms_eval ARGV``, in this process."""
    sys.argv = ["lmms_eval", *argv]
    runpy.run_module("lmms_eval", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
