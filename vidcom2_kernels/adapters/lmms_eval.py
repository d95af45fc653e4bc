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
``generate`` raised, and prints each process's token totals at the end. ``COMPRESSOR=none`` times
the uncompressed model the same way (a baseline); ``COMPRESSOR`` unset: plain lmms-eval, untouched.
lmms-eval is not a dependency of this package (see the README).

Efficiency figures: at the end of every process the launcher prints the released VidCom2 fork's
table (``LLM_time_s``: the ``generate()`` calls; ``Total_time_s``: lmms-eval's ``generate_until``
loop; ``Peak_mem_MB``), then the split of the ``generate()`` time (encoder, selection, prefill,
decode; :mod:`~vidcom2_kernels.adapters.timing`) with samples/s and generated tokens/s. With
``--output_path DIR`` each process writes ``DIR/vidcom2_efficiency_rank<R>.json`` and rank 0 also
``DIR/vidcom2_efficiency.json``, the run's total over every rank.

Why not lmms-eval's ``lmms_eval.models`` entry points: they register model names. Making the
built-in ``--model qwen2_vl`` compress would mean overriding built-in names from an environment
variable inside lmms-eval's registry setup, which downgrades any error there to a warning, so a
mistake would silently evaluate the uncompressed model.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import runpy
import sys
import textwrap
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Optional

import transformers

from .apply import apply_compression, apply_timing
from .patching import install
from .registry import ADAPTERS, LMMS_EVAL_MODELS
from .settings import Settings, settings_from_env
from .timing import PARTS, Efficiency, RunTiming, efficiency_table

# lmms-eval model names whose classes are not transformers' (so no adapter can reach them)
# name -> (what it loads, the way to a transformers class that has an adapter)
LLAVA_ROUTE = "use --model llava_hf --force_simple with a transformers LLaVA-OneVision/LLaVA-Video checkpoint"
NOT_TRANSFORMERS = {
    "llava_onevision": ("loads the LLaVA-NeXT package's own LLaVA-OneVision class", LLAVA_ROUTE),
    "llava_vid": ("loads the LLaVA-NeXT package's own LLaVA-Video class", LLAVA_ROUTE),
    "plm": (
        "loads Meta's perception_models package (apps.plm), not transformers",
        "no lmms-eval name loads a transformers PerceptionLM",
    ),
    "videollama3": (
        "loads DAMO's remote-code VideoLLaMA3 (AutoModelForCausalLM with trust_remote_code), not transformers' class",
        "no lmms-eval name loads transformers' VideoLlama3ForConditionalGeneration; apply_vidcom2 compresses that one",
    ),
}
SUPPORTED_NAMES = ", ".join(LMMS_EVAL_MODELS)
#: lmms-eval modules that reach into filelock's internals on every run (0.7.3's evaluator imports
#: ``filelock._api``, which filelock 4.3 removed: each run then exits 0 with no answers), and the fix
FILELOCK_USERS = ("lmms_eval.evaluator",)
FILELOCK_FIX = 'pip install "filelock<4.3"'
#: lmms-eval model names whose own code calls a function with more positional arguments than the
#: installed lmms-eval's definition takes (every request then fails, compressed or not):
#: --model -> (module that calls, function, module that defines it)
CALL_CONTRACTS = {
    "video_llava": ("lmms_eval.models.simple.video_llava", "read_video", "lmms_eval.models.model_utils.load_video")
}
#: lmms-eval model names whose own code passes ``generate()`` a keyword that the transformers class
#: it loads does not read (every request then fails, compressed or not; lmms-eval 0.7.3's
#: qwen2_5_omni asks for text with return_audio=False after disabling the talker, while
#: transformers 5.x reads generation_mode, so each call asks for speech from a model without a
#: talker): --model -> (module that calls, keyword, transformers class it loads)
KEYWORD_CONTRACTS = {
    "qwen2_5_omni": ("lmms_eval.models.simple.qwen2_5_omni", "return_audio", "Qwen2_5OmniForConditionalGeneration")
}
#: how long rank 0 waits for the other ranks' figures before writing the run's total without them
RANKS_WAIT_S = 120.0


class LaunchError(SystemExit):
    """A one-line reason to stop before (or instead of) evaluating: :func:`main` prints it and exits
    with code 2. A SystemExit, so lmms-eval's ``except Exception`` around an evaluation cannot
    swallow it."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = f"vidcom2 lmms-eval launcher: {message}"


def option_value(argv: list, option: str) -> str | None:
    """The value of lmms-eval's ``option`` in ``argv`` (``--option X`` or ``--option=X``)."""
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def model_name(argv: list) -> str | None:
    """The value of lmms-eval's ``--model`` in ``argv``."""
    return option_value(argv, "--model")


def timing_only(environ=None) -> bool:
    """``COMPRESSOR=none``: time the uncompressed model (unset: plain lmms-eval)."""
    env = os.environ if environ is None else environ
    return env.get("COMPRESSOR", "").strip().lower() == "none"


def check_launch(argv: list, environ=None) -> Settings | None:
    """Everything that can be checked before lmms-eval starts: lmms-eval is installed, the
    environment's settings, and the ``--model`` name. Returns the settings (None: no compression;
    :func:`timing_only` tells a timed baseline from plain lmms-eval)."""
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
    hooked = settings is not None or timing_only(environ)
    if hooked and name in NOT_TRANSFORMERS:
        what = "compressed" if settings is not None else "timed (COMPRESSOR=none)"
        loads, route = NOT_TRANSFORMERS[name]
        raise LaunchError(f"--model {name} cannot be {what}: it {loads}; {route}")
    broken = broken_call(*CALL_CONTRACTS[name]) if hooked and name in CALL_CONTRACTS else None
    if broken:
        raise LaunchError(
            f"lmms-eval {_version('lmms-eval')}'s --model {name} calls {broken}: every video request would fail "
            "(plain lmms-eval too) and record no answer; this lmms-eval cannot evaluate it"
        )
    unread = ignored_keyword(*KEYWORD_CONTRACTS[name]) if hooked and name in KEYWORD_CONTRACTS else None
    if unread:
        raise LaunchError(
            f"lmms-eval {_version('lmms-eval')}'s --model {name} passes {unread}: every request would fail "
            "(plain lmms-eval too) and record an empty answer; this lmms-eval cannot evaluate it with this transformers"
        )
    if hooked and name == "llava_hf" and "--force_simple" not in argv:
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


def module_source(module: str) -> Optional[ast.Module]:
    """The parsed source of lmms-eval's ``module`` (found under the installed package, nothing
    imported beyond lmms-eval itself), or None where there is none."""
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent.joinpath(*module.split(".")[1:]).with_suffix(".py")
    return ast.parse(path.read_text(encoding="utf-8")) if path.is_file() else None


def broken_call(caller: str, function: str, owner: str) -> Optional[str]:
    """The first call of ``function`` in ``caller``'s source that passes more positional arguments
    than ``function``'s definition in ``owner`` takes, as text (``read_video(2 positional, takes
    1)``); None when every call fits or a source is missing."""
    calls, definition = module_source(caller), module_source(owner)
    if calls is None or definition is None:
        return None
    defined = [n for n in ast.walk(definition) if isinstance(n, ast.FunctionDef) and n.name == function]
    if not defined or defined[0].args.vararg is not None:
        return None
    takes = len(defined[0].args.posonlyargs) + len(defined[0].args.args)
    for node in ast.walk(calls):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == function:
            given = len(node.args)
            if given > takes and not any(isinstance(a, ast.Starred) for a in node.args):
                return f"{function}() with {given} positional arguments; {owner}.{function} takes {takes}"
    return None


def ignored_keyword(caller: str, keyword: str, class_name: str) -> Optional[str]:
    """``keyword`` as text (``generate(return_audio=...), which ...``) when ``caller``'s source
    passes it to a ``generate()`` call and the installed transformers' ``class_name.generate``
    neither takes it as a parameter nor reads it from its keywords (``kwargs.pop`` / ``get``);
    None when it is read, not passed, or a source is missing."""
    calls, cls = module_source(caller), getattr(transformers, class_name, None)
    if calls is None or cls is None:
        return None
    passed = any(
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", None) == "generate"
        and any(k.arg == keyword for k in node.keywords)
        for node in ast.walk(calls)
    )
    if not passed or keyword in inspect.signature(cls.generate).parameters:
        return None
    try:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls.generate)))
    except (OSError, TypeError):
        return None
    read = any(
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", None) in ("pop", "get")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == keyword
        for node in ast.walk(body)
    )
    return (
        None
        if read
        else f"generate({keyword}=...), which transformers {transformers.__version__}'s {class_name}.generate does not read"
    )


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
    """Wraps ``lmms.create_from_arg_string`` so that the model lmms-eval builds is compressed
    (``settings``; None: only timed); ``handles`` collects the handles (one per model built), and
    ``loop_s`` sums the wall time of the lmms-eval models' ``generate_until`` loops. ``remove()``
    restores lmms-eval."""

    def __init__(self, lmms_class, settings: Optional[Settings]):
        self.lmms_class, self.settings, self.handles, self.undos, self.loop_s = lmms_class, settings, [], [], 0.0
        self.original = lmms_class.__dict__["create_from_arg_string"]
        create = self.original.__func__

        def create_from_arg_string(cls, *args, **kwargs):
            lm = create(cls, *args, **kwargs)
            self.handles.append(compress(lm, self.settings))
            self.time_loop(lm)
            return lm

        lmms_class.create_from_arg_string = classmethod(create_from_arg_string)

    def time_loop(self, lm) -> None:
        """Sum the wall time of ``lm.generate_until`` (lmms-eval's evaluation loop: video decoding,
        preprocessing, ``generate()``, detokenising), the released fork's ``Total_time_s``."""
        loop = getattr(lm, "generate_until", None)
        if not callable(loop):
            warnings.warn(f"lmms-eval's {type(lm).__name__} has no generate_until: Total_time_s stays 0", stacklevel=2)
            return

        @functools.wraps(loop)
        def generate_until(*args, **kwargs):
            start = time.perf_counter()
            try:
                return loop(*args, **kwargs)
            finally:
                self.loop_s += time.perf_counter() - start

        self.undos.append(install([(lm, "generate_until", generate_until)]))

    def efficiency(self) -> Efficiency:
        """This process's figures, with what was run."""
        run = RunTiming()
        for handle in self.handles:
            run = run.merged(handle.timing)
        settings = self.settings
        devices = sorted({str(h.stopwatch.device) for h in self.handles})
        rank, world = rank_and_world()
        extra = {
            "rank": rank,
            "world_size": world,
            "compressor": settings.method if settings is not None else "none",
            "retention": settings.retention if settings is not None else 1.0,
            "exact": settings.exact if settings is not None else False,
            "frame_budgets": settings.frame_budgets if settings is not None else None,
            "options": dict(settings.options or {}) if settings is not None else {},
            "device": ", ".join(devices),
        }
        return Efficiency(run, self.loop_s, extra)

    def remove(self) -> None:
        self.lmms_class.create_from_arg_string = self.original
        for undo in self.undos:
            undo()


def compress(lm, settings: Optional[Settings]):
    """Apply ``settings``' compression (None: the timing alone) to the transformers model inside
    lmms-eval's ``lm`` (its ``model`` attribute, unwrapped from accelerate by lmms-eval's own
    property); returns the handle."""
    model = getattr(lm, "model", None)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTERS:
        loaded = type(model).__name__ if model is not None else "no transformers model"
        raise LaunchError(
            f"lmms-eval's {type(lm).__name__} loaded {loaded} (model_type {model_type!r}), which VidCom2 has "
            f"no adapter for; adapters: {', '.join(sorted(ADAPTERS))}; lmms-eval names with an adapter: "
            f"{SUPPORTED_NAMES}"
        )
    if settings is None:
        return apply_timing(model)
    return apply_compression(model, **asdict(settings))


def rank_and_world() -> tuple:
    """This process's rank and the number of processes (torchrun's and accelerate's variables)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def summary(settings: Optional[Settings], handles: list) -> str:
    """One line per process: the settings and the video tokens of all compressed calls."""
    rank = rank_and_world()[0]
    before = sum(h.video_tokens_before for h in handles)
    after = sum(h.video_tokens_after for h in handles)
    calls = sum(h.calls for h in handles)
    if settings is None:
        seen = sum(h.timing.video_tokens_after for h in handles)
        videos = sum(h.timing.video_calls for h in handles)
        return f"vidcom2 [rank {rank}] none (timing only): {videos} generate() calls with video, video tokens {seen}"
    what = f"{settings.method}, retention {settings.retention:g}{', exact' if settings.exact else ''}"
    what += "".join(f", {name} {value:g}" for name, value in (settings.options or {}).items())
    share = f" ({100.0 * after / before:.1f}%)" if before else ""
    return f"vidcom2 [rank {rank}] {what}: {calls} generate() calls with video, video tokens {before} -> {after}{share}"


def split_line(figures: dict, rank: str) -> str:
    """The split of the ``generate()`` time and the rates, one line."""
    split = ", ".join(f"{name} {figures['split_s'][name]:.3f} s" for name in figures["split_s"])
    return (
        f"vidcom2 [{rank}] generate() time split: {split} (sum: LLM_time_s {figures['LLM_time_s']:.3f} s; "
        f"language model {figures['language_model_s']:.3f} s); "
        f"{figures['samples']} samples, {figures['samples_per_s']:.3f} samples/s; "
        f"{figures['new_tokens']} generated tokens, {figures['generated_tokens_per_s']:.1f} tokens/s of decoding"
    )


def rank_files(output_path: Optional[str]) -> dict:
    """The rank files already under ``output_path`` before this run, by name: (inode, mtime in ns).
    A file this run writes is a new file (:func:`write_json` replaces, never rewrites), so it never
    matches; clock granularity cannot make a fresh file look old, nor an old one fresh."""
    if not output_path or not Path(output_path).is_dir():
        return {}
    return {p.name: file_id(p) for p in Path(output_path).glob("vidcom2_efficiency_rank*.json")}


def file_id(path: Path) -> Optional[tuple]:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def report(efficiency: Efficiency, output_path: Optional[str], stale: dict) -> None:
    """Print this process's figures; with ``output_path`` write them, and on rank 0 the run's total
    over every rank (rank files this run wrote, not the ``stale`` ones of :func:`rank_files`; the
    other ranks' are awaited). A file
    that cannot be written or read costs its figures (said in one line), never the run."""
    rank, world = rank_and_world()
    figures = efficiency.as_dict()
    title = "Efficiency Analysis" + (f" (rank {rank} of {world})" if world > 1 else "")
    print(efficiency_table(efficiency.released_rows(), title), flush=True)
    print(split_line(figures, f"rank {rank}"), flush=True)
    if not output_path:
        return
    folder = Path(output_path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / f"vidcom2_efficiency_rank{rank}.json", figures)
    except OSError as exc:
        print(f"vidcom2 [rank {rank}] could not write the efficiency figures under {folder}: {exc}", flush=True)
        return
    if rank != 0:
        return
    runs, loops, missing = {}, {}, []
    deadline = time.monotonic() + RANKS_WAIT_S
    for r in range(world):
        name = f"vidcom2_efficiency_rank{r}.json"
        data = read_rank(folder / name, stale.get(name), deadline)
        if data is None:
            missing.append(r)
        else:
            runs[r], loops[r] = run_from_figures(data), data["Total_time_s"]
    if missing:
        print(f"vidcom2 [rank 0] no figures from rank(s) {missing} after {RANKS_WAIT_S:g} s: the total leaves them out")
    run = RunTiming()
    for r in sorted(runs):
        run = run.merged(runs[r])
    extra = {**efficiency.extra, "rank": "total", "ranks": sorted(runs), "ranks_missing": missing}
    total = Efficiency(run, max(loops.values(), default=0.0), extra)
    try:
        write_json(folder / "vidcom2_efficiency.json", total.as_dict())
    except OSError as exc:
        print(f"vidcom2 [rank 0] could not write the run's total under {folder}: {exc}", flush=True)
    if world > 1:
        print(efficiency_table(total.released_rows(), f"Efficiency Analysis (total of {len(runs)} ranks)"), flush=True)
        print(split_line(total.as_dict(), "total"), flush=True)


def read_rank(path: Path, stale: Optional[tuple], deadline: float) -> Optional[dict]:
    """A rank's figures once its file of this run (not the ``stale`` file id) is there, or None at
    ``deadline`` (or when the file is not a rank's figures)."""
    while file_id(path) in (None, stale):
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)
    try:
        data = json.loads(path.read_text())
        run_from_figures(data)
        return data
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_from_figures(figures: dict) -> RunTiming:
    """The :class:`RunTiming` a rank's JSON figures were made from."""
    run = RunTiming(**{k: figures[k] for k in RunTiming.__dataclass_fields__ if k in figures})
    for name in PARTS:
        setattr(run, name, figures["split_s"][name[:-2]])
    run.total_s, run.peak_mem_mb = figures["LLM_time_s"], figures["Peak_mem_MB"]
    return run


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` whole or not at all (a reader never sees half a file)."""
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


def output_path(argv: list) -> Optional[str]:
    """lmms-eval's ``--output_path`` in ``argv`` (``--output_path X`` or ``--output_path=X``)."""
    return option_value(argv, "--output_path")


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
    stale = rank_files(output_path(argv))
    settings = check_launch(argv)
    if settings is None and not timing_only():  # plain lmms-eval
        return run_lmms_eval(argv)
    from lmms_eval.api.model import lmms  # lmms-eval is optional: imported only when launching it

    hook = Compressing(lmms, settings)
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
    if hook.handles:
        report(hook.efficiency(), output_path(argv), stale)
    failures = sum(h.failures for h in hook.handles)
    if failures:
        raise SystemExit(
            f"vidcom2 lmms-eval launcher: {failures} generate() call(s) raised under the launcher (see the "
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
