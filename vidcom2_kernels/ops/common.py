"""Helpers shared by the Triton stages: interpreter detection, the score keys, precise math, and
(re-exported from :mod:`vidcom2_kernels.device_layout`) the packed device arrays the kernels read."""

from __future__ import annotations

import functools
import types

import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.runtime.interpreter import InterpretedFunction

from ..device_layout import SPLIT_ROWS, UNIT_ROWS, DeviceLayout, RequestArrays, device_layout, request_arrays


def cdiv(a: int, b: int) -> int:
    """Host ``ceil(a / b)`` for launch grids. Plain Python: ``triton.cdiv`` is a constexpr
    function in triton >= 3.5, about 2 us a call on the host (it unwraps its arguments)."""
    return -(-a // b)


def launch_config(fn):
    """``fn`` (int sizes -> a launch configuration dict) memoised per sizes; the result is read
    only (one shared mapping a size): the host work of a launch stays a dictionary lookup."""

    @functools.lru_cache(maxsize=1024)
    def cached(*sizes: int):
        return types.MappingProxyType(fn(*sizes))

    return functools.wraps(fn)(cached)


def next_pow2(n: int) -> int:
    """Host ``triton.next_power_of_2`` (1 for n <= 1), without its constexpr-function overhead."""
    return 1 << max(0, n - 1).bit_length()


@triton.jit
def order_key(x):
    """Float32 scores -> int32 whose order is the float order. NaN becomes +inf, -0.0 becomes
    +0.0 (so it ties with +0.0 and the lower index wins, as in a stable sort)."""
    x = tl.where(x != x, float("inf"), x) + 0.0
    bits = x.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def is_interpreter() -> bool:
    """True when the kernels were built for Triton's CPU interpreter: ``TRITON_INTERPRET=1`` was
    set when this package was imported (Triton decides per kernel, at definition)."""
    return isinstance(order_key, InterpretedFunction)


if is_interpreter():

    @triton.jit
    def precise_exp(x):
        """``exp`` as the interpreter computes it (numpy's float32 exp)."""
        return tl.exp(x)

else:

    @triton.jit
    def precise_exp(x):
        """``exp`` from the vendor math library (libdevice's ``expf``, at most 2 ulp from the true
        value), not ``tl.exp``: on NVIDIA that is ``ex2.approx`` of ``x * log2(e)``, whose error
        grows with ``|x|`` (about ``|x|`` ulp), enough to move a budget's rounding."""
        return libdevice.exp(x)


@triton.jit
def clamp_min(x, lo):
    """``max(x, lo)`` that keeps NaN, like ``torch.clamp_min`` (``tl.maximum`` returns ``lo`` for a
    NaN ``x`` on the GPU): a NaN feature must stay NaN through every norm and distance."""
    return tl.where(x < lo, lo, x)


@triton.jit
def last_to_arrive(arrivals_ptr, expected):
    """Count this program's arrival at ``arrivals_ptr`` (int32, zeroed by an earlier launch); true
    in the ``expected``-th program to arrive, whichever it is. A block barrier first (every
    thread's stores done), then an ``acq_rel`` atomic at GPU scope (the stores of the programs
    that arrived before are visible to the last one), then a barrier again (all its threads see
    them). The last program then combines what the others stored, in a fixed order."""
    tl.debug_barrier()
    arrived = tl.atomic_add(arrivals_ptr, 1, sem="acq_rel", scope="gpu")
    tl.debug_barrier()
    return arrived == expected - 1


@triton.jit
def key_at_most(bits, rows, bits_max, row_max):
    """(bits, row) <= (bits_max, row_max) in lexicographic order, elementwise."""
    return (bits < bits_max) | ((bits == bits_max) & (rows <= row_max))


@triton.jit
def unit_rows(unit_row_start_ptr, unit_rows_ptr, BLOCK_N: tl.constexpr):
    """This program's row unit (<= BLOCK_N rows of one frame): its index, first row, the
    (BLOCK_N,) row offsets inside the unit and their mask."""
    i_u = tl.program_id(0)
    o_n = tl.arange(0, BLOCK_N)
    return i_u, tl.load(unit_row_start_ptr + i_u), o_n, o_n < tl.load(unit_rows_ptr + i_u)


@triton.jit
def row_squares(p_rows, m_rows, C, stride_c, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
    """(BLOCK,) float32 squared norms of the rows whose first elements ``p_rows`` (BLOCK, 1)
    points at (``m_rows`` (BLOCK,) masks them), read in channel blocks."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)
        b = tl.load(p_rows + o_c[None, :].to(tl.int64) * stride_c, mask=m_rows[:, None] & (o_c < C)[None, :], other=0.0)
        b = b.to(tl.float32)
        acc += tl.sum(b * b, axis=1)
    return acc


@triton.jit
def tile_products(p_i, m_i, p_j, m_j, C, stride_c, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """(BLOCK_M, BLOCK_N) float32 dot products of the rows at ``p_i`` (BLOCK_M, 1) with those at
    ``p_j`` (BLOCK_N, 1), one ``tl.dot`` per channel block in IEEE float32 (no TF32: the products
    decide kept sets), and (BLOCK_N,) the squared norms of the ``p_j`` rows from the same loads."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    jj = tl.zeros([BLOCK_N], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        o_c = c0 + tl.arange(0, BLOCK_C)
        m_c = (o_c < C)[None, :]
        off_c = o_c[None, :].to(tl.int64) * stride_c
        a = tl.load(p_i + off_c, mask=m_i[:, None] & m_c, other=0.0).to(tl.float32)
        b = tl.load(p_j + off_c, mask=m_j[:, None] & m_c, other=0.0).to(tl.float32)
        acc += tl.dot(a, tl.trans(b), input_precision="ieee")
        jj += tl.sum(b * b, axis=1)
    return acc, jj


__all__ = ["SPLIT_ROWS", "UNIT_ROWS", "DeviceLayout", "RequestArrays", "device_layout", "request_arrays"]
