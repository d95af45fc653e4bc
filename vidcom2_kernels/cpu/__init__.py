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
import shutil
import subprocess
import tempfile
import threading
import warnings
from typing import Optional

import torch

from ..records import INT_VIEW

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-shared", "-fPIC")
DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
SWITCH = "VIDCOM2_NATIVE_CPU"

_LOCK = threading.Lock()
_LOADED: dict = {}

#: argument types of the C entry points, a letter each: i int, l int64, u uint32, f float, p pointer
SIGNATURES = {
    "vc2_channel_moments": "iplllpppupi",
    "vc2_norms_frame_sums": "ipllllpfppi",
    "vc2_centre_dots": "ipllllpppppi",
    "vc2_dycoke_similarity": "ipllllpfpupi",
}
CTYPES = {"i": ctypes.c_int, "l": ctypes.c_int64, "u": ctypes.c_uint32, "f": ctypes.c_float, "p": ctypes.c_void_p}


def compiler() -> Optional[str]:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _machine() -> str:
    """What -march=native depends on: the CPU's model and flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return ""


def library_path(cc: str) -> str:
    with open(SOURCE, "rb") as f:
        key = hashlib.sha256(f.read() + " ".join((cc, *FLAGS)).encode() + _machine().encode()).hexdigest()[:16]
    root = os.environ.get("VIDCOM2_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vidcom2_kernels")
    return os.path.join(root, f"vidcom2_cpu_{key}.so")


def build(cc: str, path: str) -> None:
    """Compile ``kernels.c`` to ``path`` (through a temporary file, so concurrent builds are safe)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    try:
        subprocess.run([cc, *FLAGS, "-o", tmp, SOURCE], check=True, capture_output=True, text=True)
        os.replace(tmp, path)
    finally:
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


def _load() -> Optional[ctypes.CDLL]:
    cc = compiler()
    if cc is None:
        warnings.warn("vidcom2_kernels: no C compiler found; the torch backend uses its eager CPU path", stacklevel=3)
        return None
    path = library_path(cc)
    try:
        if not os.path.exists(path):
            build(cc, path)
        lib = ctypes.CDLL(path)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        warnings.warn(
            f"vidcom2_kernels: native CPU kernels unavailable ({detail.strip()[:300]}); "
            "the torch backend uses its eager CPU path",
            stacklevel=3,
        )
        return None
    for name, letters in SIGNATURES.items():
        getattr(lib, name).argtypes = [CTYPES[c] for c in letters]
        getattr(lib, name).restype = ctypes.c_int
    return lib


def usable(features: torch.Tensor) -> bool:
    """The native passes apply: a CPU tensor of a supported dtype with contiguous channels (any
    row stride), and the library loads."""
    return (
        features.device.type == "cpu"
        and features.dtype in DTYPES
        and (features.stride(1) == 1 or features.shape[1] == 1)
        and library() is not None
    )


def _call(name: str, *args) -> None:
    status = getattr(library(), name)(*args)
    if status == -2:
        raise MemoryError(f"{name}: out of memory for its per-thread sums")
    if status != 0:
        raise RuntimeError(f"{name}: unsupported dtype")


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


def norms_frame_sums(x: torch.Tensor, F: int, T: int, keep: torch.Tensor, eps: float):
    """``x`` (F * T, C) frames of T rows, ``keep`` (C,) bool: row norms over the kept channels
    (F * T,) float32, and per frame the sum of its rows scaled by 1 / max(norm, eps) (F, C)."""
    C = x.shape[1]
    keep = keep.to(torch.bool).contiguous()
    norms = torch.empty(F * T, dtype=torch.float32)
    sums = torch.empty((F, C), dtype=torch.float32)
    _call(
        "vc2_norms_frame_sums",
        DTYPES[x.dtype],
        x.data_ptr(),
        F,
        T,
        C,
        x.stride(0),
        keep.data_ptr(),
        eps,
        norms.data_ptr(),
        sums.data_ptr(),
        torch.get_num_threads(),
    )
    return norms, sums


def centre_dots(x: torch.Tensor, F: int, T: int, keep: torch.Tensor, frame_centres, video_centre):
    """Dot products of every row over the kept channels with its frame's centre and with the
    video centre: (2, F, T) float32."""
    C = x.shape[1]
    keep = keep.to(torch.bool).contiguous()
    frame_centres = frame_centres.float().contiguous()
    video_centre = video_centre.float().contiguous()
    dots = torch.empty((2, F, T), dtype=torch.float32)
    _call(
        "vc2_centre_dots",
        DTYPES[x.dtype],
        x.data_ptr(),
        F,
        T,
        C,
        x.stride(0),
        keep.data_ptr(),
        frame_centres.data_ptr(),
        video_centre.data_ptr(),
        dots[0].data_ptr(),
        dots[1].data_ptr(),
        torch.get_num_threads(),
    )
    return dots


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
