"""Native CPU passes for the torch backend: ``kernels.c`` fuses the float32 conversion, the channel
mask and the reductions of each read of the features into one loop (eager torch needs 3-4
operations over every element per read, each a trip through memory).

The source is compiled once per machine with the system C compiler (``cc -O3 -march=native
-fopenmp``) into ``~/.cache/vidcom2_kernels`` (or ``$VIDCOM2_CACHE``) and loaded with ctypes; it
needs no Python headers and builds in about a second. Without a compiler, or with
``VIDCOM2_NATIVE_CPU=0``, :func:`library` returns None and the torch backend runs its eager path
(same results up to float32 summation order). Calls release the GIL and use
``torch.get_num_threads()`` threads; results do not depend on the thread count.

Functions take a (rows, C) float32 / bfloat16 / float16 CPU tensor with contiguous channels and
any row stride (other layouts take the eager path).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from typing import Optional

import torch

from ..device_layout import DeviceLayout
from ..records import INT_VIEW

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-shared", "-fPIC")
DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
SWITCH = "VIDCOM2_NATIVE_CPU"
#: rows of one video the native selection sorts (a row's index inside its video is packed into
#: the low 32 bits of its sort key); longer videos take the eager path
MAX_SORT_ROWS = 2**32
#: seconds the first-use build may take (it runs inside the first compress() call)
BUILD_TIMEOUT = 120

_LOCK = threading.Lock()
_LOADED: dict = {}

#: argument types of the C entry points, a letter each: i int, l int64, u uint32, f float, p pointer
#: (the first letter is the return type)
SIGNATURES = {
    "vc2_channel_moments": "i:iplllpppupi",
    "vc2_dycoke_similarity": "i:ipllllpfpupi",
    "vc2_channel_keep": "i:iplpplllupppi",
    "vc2_token_scores": "i:iplppppllpfpippi",
    "vc2_frame_budgets": "i:lppppfpp",
    "vc2_select": "l:llppppppppppli",
}
CTYPES = {"i": ctypes.c_int, "l": ctypes.c_int64, "u": ctypes.c_uint32, "f": ctypes.c_float, "p": ctypes.c_void_p}


def compiler() -> Optional[list]:
    """The C compiler command: ``$CC`` split as a shell would (``ccache gcc``, ``gcc -O2``), else
    ``cc`` or ``gcc`` from the PATH; None when there is none."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    found = shutil.which("cc") or shutil.which("gcc")
    return [found] if found else None


@functools.lru_cache(maxsize=None)
def _compiler_version(cc: tuple) -> str:
    """What ``cc --version`` prints (part of the cache key: another compiler, another build)."""
    try:
        out = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout + out.stderr


def _machine() -> str:
    """What -march=native depends on: the CPU's model and flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return ""


def cache_root() -> str:
    return os.environ.get("VIDCOM2_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vidcom2_kernels")


def library_path(cc: list, root: Optional[str] = None) -> str:
    """Where the build of ``kernels.c`` by ``cc`` for this machine lives: the name hashes the
    source, the command, the compiler's version, the flags and the CPU."""
    with open(SOURCE, "rb") as f:
        parts = (f.read(), " ".join((*cc, *FLAGS)), _compiler_version(tuple(cc)), _machine())
    key = hashlib.sha256(b"\0".join(p if isinstance(p, bytes) else p.encode() for p in parts)).hexdigest()[:16]
    return os.path.join(root or cache_root(), f"vidcom2_cpu_{key}.so")


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def _digest(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def verified(path: str) -> bool:
    """``path`` holds the library :func:`build` wrote there: its SHA-256 is the one recorded beside
    it (``path.sha256``). A truncated, damaged or foreign file is never loaded (loading a truncated
    shared object can kill the process with SIGBUS)."""
    try:
        with open(path + ".sha256") as f:
            recorded = f.read().strip()
    except OSError:
        return False
    return bool(recorded) and _digest(path) == recorded


def build(cc: list, path: str) -> None:
    """Compile ``kernels.c`` to ``path`` and record its digest beside it, through temporary files
    and renames (concurrent builds, in threads or processes, are safe). Files get the usual modes
    under the umask (readable by other users of a shared cache where the umask allows it)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    mask = _umask()
    temps = []
    try:
        for suffix in (".so", ".sha256"):
            fd, tmp = tempfile.mkstemp(suffix=suffix, dir=folder)
            os.close(fd)
            temps.append(tmp)
        subprocess.run(
            [*cc, *FLAGS, "-o", temps[0], SOURCE], check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT
        )
        with open(temps[1], "w") as f:
            f.write(_digest(temps[0]) + "\n")
        os.chmod(temps[0], 0o777 & ~mask)
        os.chmod(temps[1], 0o666 & ~mask)
        os.replace(temps[1], path + ".sha256")
        os.replace(temps[0], path)
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.remove(tmp)


def library() -> Optional[ctypes.CDLL]:
    """The loaded kernels, built on first use; None when disabled or when no build is possible
    (a warning says why, once)."""
    if os.environ.get(SWITCH, "1") == "0":
        return None
    with _LOCK:
        if "lib" not in _LOADED:
            _LOADED["lib"] = _load()
        return _LOADED["lib"]


def _unavailable(why: str) -> None:
    warnings.warn(
        f"vidcom2_kernels: native CPU kernels unavailable ({why.strip()[:300]}); the torch backend uses its eager CPU path",
        stacklevel=4,
    )


def _load() -> Optional[ctypes.CDLL]:
    """Load the cached build; a missing, damaged or foreign one is rebuilt (once). A cache that
    cannot be written gets a build in a private temporary directory instead."""
    cc = compiler()
    if cc is None:
        warnings.warn("vidcom2_kernels: no C compiler found; the torch backend uses its eager CPU path", stacklevel=3)
        return None
    path = library_path(cc)
    if not verified(path):
        try:
            build(cc, path)
        except subprocess.CalledProcessError as exc:
            return _unavailable(exc.stderr or str(exc))
        except subprocess.TimeoutExpired:
            return _unavailable(f"the compiler ran past {BUILD_TIMEOUT} s")
        except OSError:  # the cache cannot be written (or the compiler cannot start): a private build
            private = tempfile.mkdtemp(prefix="vidcom2_kernels-")
            path = library_path(cc, private)
            try:
                build(cc, path)
            except (OSError, subprocess.SubprocessError) as exc:
                shutil.rmtree(private, ignore_errors=True)
                return _unavailable(getattr(exc, "stderr", "") or str(exc))
    try:
        lib = ctypes.CDLL(path)
        for name, letters in SIGNATURES.items():
            result, args = letters.split(":")
            getattr(lib, name).argtypes = [CTYPES[c] for c in args]
            getattr(lib, name).restype = CTYPES[result]
    except (OSError, AttributeError) as exc:
        return _unavailable(f"{path}: {exc}")
    return lib


def usable(features: torch.Tensor) -> bool:
    """The native passes apply: a CPU tensor of a supported dtype with contiguous channels (any
    row stride; a 1-D tensor of scores or uniqueness counts as one channel), and the library loads."""
    return (
        features.device.type == "cpu"
        and features.dtype in DTYPES
        and (features.dim() == 1 or features.stride(1) == 1 or features.shape[1] == 1)
        and library() is not None
    )


def _call(name: str, *args) -> int:
    """Call the entry point ``name``; its result (0, or a count), or an error for -2 (out of
    memory for its temporaries) and -1 (an unsupported dtype)."""
    status = getattr(library(), name)(*args)
    if status == -2:
        raise MemoryError(f"{name}: out of memory for its temporaries")
    if status < 0:
        raise RuntimeError(f"{name}: unsupported dtype")
    return status


@functools.lru_cache(maxsize=None)
def limit_bits(dtype: torch.dtype, limit: float) -> int:
    """The bit pattern (sign cleared) of the smallest magnitude of ``dtype`` that is >= ``limit``:
    a value is NaN, Inf or >= ``limit`` in magnitude exactly when its pattern, sign cleared, is
    at least this (IEEE patterns of one sign order like their magnitudes; Inf if every finite
    value is below ``limit``)."""
    value = torch.tensor(limit if limit <= torch.finfo(dtype).max else float("inf"), dtype=dtype)
    if float(value) < limit:  # rounded down: the next representable magnitude
        value = torch.nextafter(value, torch.tensor(float("inf"), dtype=dtype))
    return int(value.view(INT_VIEW[dtype])) & (0x7FFFFFFF if dtype == torch.float32 else 0x7FFF)


def channel_moments(x: torch.Tensor, shift: torch.Tensor, limit: float):
    """Sums of ``x - shift`` and of its squares per channel (C,) float64, over the rows of
    ``x`` (rows, C); and a 0-d bool, a value of ``x`` is NaN, Inf or of magnitude >= ``limit``."""
    C = x.shape[1]
    shift = shift.float().contiguous()
    out = torch.empty((2, C), dtype=torch.float64)
    bad = torch.zeros(1, dtype=torch.int32)
    _call(
        "vc2_channel_moments",
        DTYPES[x.dtype],
        x.data_ptr(),
        x.shape[0],
        C,
        x.stride(0),
        shift.data_ptr(),
        out[0].data_ptr(),
        out[1].data_ptr(),
        limit_bits(x.dtype, limit),
        bad.data_ptr(),
        torch.get_num_threads(),
    )
    return out[0], out[1], bad[0].bool()


def dycoke_similarity(x: torch.Tensor, F: int, T: int, anchors: torch.Tensor, eps: float, limit: float):
    """DyCoke's scores of one video ``x`` (F * T, C): each row's cosine similarity with the same
    row of its frame's anchor (``anchors`` (F,) int64 frame index in the video, or -1: 0), norms
    clamped to ``eps``, (F * T,) float32; and a 0-d bool, a value is NaN, Inf or >= ``limit``."""
    anchors = anchors.to(torch.int64).contiguous()
    out = torch.empty(F * T, dtype=torch.float32)
    bad = torch.zeros(1, dtype=torch.int32)
    _call(
        "vc2_dycoke_similarity",
        DTYPES[x.dtype],
        x.data_ptr(),
        F,
        T,
        x.shape[1],
        x.stride(0),
        anchors.data_ptr(),
        eps,
        out.data_ptr(),
        limit_bits(x.dtype, limit),
        bad.data_ptr(),
        torch.get_num_threads(),
    )
    return out, bad[0].bool()


def channel_keep(x: torch.Tensor, ids: DeviceLayout, k: int, limit: float):
    """Every video's channel variances (V, C) float32, its ``k`` kept channels (lowest variance)
    (V, C) bool, and (V,) bool, the video holds a value that is NaN, Inf or >= ``limit``."""
    V, C = ids.layout.num_videos, x.shape[1]
    var = torch.empty((V, C), dtype=torch.float32)
    keep = torch.empty((V, C), dtype=torch.bool)
    bad = torch.empty(V, dtype=torch.int32)
    _call(
        "vc2_channel_keep",
        DTYPES[x.dtype],
        x.data_ptr(),
        V,
        ids.row_start.data_ptr(),
        ids.tokens_per_frame.data_ptr(),
        C,
        x.stride(0),
        k,
        limit_bits(x.dtype, limit),
        var.data_ptr(),
        keep.data_ptr(),
        bad.data_ptr(),
        torch.get_num_threads(),
    )
    return var, keep, bad.bool()


def token_scores(x: torch.Tensor, ids: DeviceLayout, keep: torch.Tensor, eps: float, bandwidths: torch.Tensor):
    """Scores (N,) float32 and frame uniqueness (F,) float32 of every video (steps 2-4), ``keep``
    (V, C) bool the kept channels, ``bandwidths`` the Gaussian bandwidths (float32)."""
    layout = ids.layout
    keep = keep.contiguous()
    scores = torch.empty(layout.num_tokens, dtype=torch.float32)
    uniqueness = torch.empty(layout.total_frames, dtype=torch.float32)
    _call(
        "vc2_token_scores",
        DTYPES[x.dtype],
        x.data_ptr(),
        layout.num_videos,
        ids.row_start.data_ptr(),
        ids.num_frames.data_ptr(),
        ids.tokens_per_frame.data_ptr(),
        ids.frame_start.data_ptr(),
        x.shape[1],
        x.stride(0),
        keep.data_ptr(),
        eps,
        bandwidths.data_ptr(),
        bandwidths.numel(),
        scores.data_ptr(),
        uniqueness.data_ptr(),
        torch.get_num_threads(),
    )
    return scores, uniqueness


def frame_budgets(uniqueness: torch.Tensor, ids: DeviceLayout, retention32: torch.Tensor, temperature: float):
    """FCA's budgets (F,) int64 and their per-video sums (V,) int64 from the frame uniqueness."""
    uniqueness = uniqueness.float().contiguous()
    budgets = torch.empty(ids.layout.total_frames, dtype=torch.int64)
    counts = torch.empty(ids.layout.num_videos, dtype=torch.int64)
    _call(
        "vc2_frame_budgets",
        ids.layout.num_videos,
        ids.frame_start.data_ptr(),
        uniqueness.data_ptr(),
        retention32.data_ptr(),
        ids.frame_tokens.data_ptr(),
        temperature,
        budgets.data_ptr(),
        counts.data_ptr(),
    )
    return budgets, counts


def select(scores: torch.Tensor, ids: DeviceLayout, budgets: torch.Tensor, targets, num_kept: int):
    """The kept rows: (num_kept,) ascending indices, (N,) bool mask, kept per frame (F,) and per
    video (V,) int64. ``targets`` (V,) int64 (exact mode) or None. Raises when the kept count is
    not ``num_kept`` (the caller's read of the counts and the selection disagree)."""
    layout = ids.layout
    scores = scores.float().contiguous()
    budgets = budgets.to(torch.int64).contiguous()
    indices = torch.empty(num_kept, dtype=torch.int64)
    mask = torch.empty(layout.num_tokens, dtype=torch.bool)
    final = torch.empty(layout.total_frames, dtype=torch.int64)
    counts = torch.empty(layout.num_videos, dtype=torch.int64)
    kept = _call(
        "vc2_select",
        layout.num_videos,
        layout.total_frames,
        ids.row_start.data_ptr(),
        ids.frame_start.data_ptr(),
        ids.frame_row_start.data_ptr(),
        scores.data_ptr(),
        budgets.data_ptr(),
        None if targets is None else targets.data_ptr(),
        mask.data_ptr(),
        final.data_ptr(),
        counts.data_ptr(),
        indices.data_ptr(),
        num_kept,
        torch.get_num_threads(),
    )
    if kept != num_kept:
        raise RuntimeError(f"vc2_select kept {kept} tokens where {num_kept} were sized")
    return indices, mask, final, counts
