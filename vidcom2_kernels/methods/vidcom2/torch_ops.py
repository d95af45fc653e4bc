"""VidCom2's scorer on the ``torch`` backend: the channel choice (step 1) and the token scores
with the frame uniqueness (steps 2-4), per video in frame-aligned chunks (no loop over frames).
On the CPU each is one native call for the whole batch (:func:`cpu.channel_keep`,
:func:`cpu.token_scores`) where :func:`cpu.usable`; the eager code is the path everywhere else
and the one the native kernels are tested against.
"""

from __future__ import annotations

import torch

from ... import cpu
from ...backends.contract import nan_as_inf, write_out
from ...backends.torch_backend import as_float32, out_of_range, scratch, video_chunks
from ...constants import GAUSSIAN_BANDWIDTHS, MAX_ABS, NORM_EPS, kept_channels
from ...device_layout import device_layout
from ...layout import VideoLayout
from ...records import INT_VIEW

#: the Gaussian bandwidths as the native kernels read them
BANDWIDTHS = torch.tensor(GAUSSIAN_BANDWIDTHS, dtype=torch.float32)


# ---------------------------------------------------------------------------------- step 1
def masked_float32(x: torch.Tensor, bits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``x`` (n, C) as float32 in ``out`` with the channels whose ``bits`` are 0 set to +0.0 and
    the others unchanged (a bitwise AND: exact, NaN and Inf in a dropped channel cannot leak into
    a product). ``bits`` (C,) is -1/0 of ``INT_VIEW[x.dtype]``."""
    if x.dtype == torch.float32:  # the conversion is the masking
        return torch.bitwise_and(x.view(torch.int32), bits, out=out.view(torch.int32)).view(torch.float32)
    half = scratch("half", tuple(x.shape), x.device, INT_VIEW[x.dtype])  # mask the 16-bit patterns, then convert
    return out.copy_(torch.bitwise_and(x.view(INT_VIEW[x.dtype]), bits, out=half).view(x.dtype))


def keep_bits(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(C,) -1 where ``keep`` else 0, in ``INT_VIEW[dtype]`` (for :func:`masked_float32`)."""
    return torch.where(keep, -1, 0).to(INT_VIEW[dtype])


def video_m2(features: torch.Tensor, layout: VideoLayout, v: int, validate: bool) -> tuple:
    """(C,) float64 sum of squared deviations from the mean of every channel over video v, and a
    0-d bool (the video holds a value out of range; None unless ``validate``).

    The rows are shifted by the video's first-frame mean (so a large common offset cannot cancel
    digits). One read in chunks, each through torch's fused per-channel mean/variance
    (``batch_norm_update_stats``, float32), the chunks merged exactly in float64 (Chan et al.),
    :func:`out_of_range` on each chunk."""
    T, row0 = int(layout.tokens_per_frame[v]), int(layout.row_start[v])
    shift = features[row0 : row0 + T].float().mean(dim=0)
    count = mean = m2 = 0
    flags = []
    for _, x in video_chunks(features, layout, v):
        if x.dtype == torch.float32:  # the shift is the copy
            d = torch.sub(x, shift, out=scratch("shifted", tuple(x.shape), x.device))
        else:
            d = as_float32(x, "shifted", copy=True).sub_(shift)
        c_mean, c_var = torch.batch_norm_update_stats(d, None, None, 1.0)
        c_n, c_mean, c_m2 = x.shape[0], c_mean.double(), c_var.double() * x.shape[0]
        delta = c_mean - mean
        m2 = m2 + c_m2 + delta.square() * (count * c_n / (count + c_n))
        mean = mean + delta * (c_n / (count + c_n))
        count += c_n
        if validate:
            flags.append(out_of_range(x))
    return m2, torch.stack(flags).any() if validate else None


def channel_variance(features: torch.Tensor, layout: VideoLayout, validate: bool = False) -> tuple:
    """(V, C) float32 biased variance of every channel over each video (:func:`video_m2`),
    and with ``validate`` (V,) bool, the video holds a value out of range, else None. Native
    CPU kernels: one fused read a video, float64 sums (:func:`cpu.channel_keep`)."""
    if cpu.usable(features):
        var, _, bad = _native_channels(features, layout)
        return var, bad if validate else None
    out, bad = [], []
    for v in range(layout.num_videos):
        n = int(layout.tokens_per_video[v])
        if n == 0:
            out.append(torch.zeros(features.shape[1], device=features.device))
            bad.append(torch.zeros((), dtype=torch.bool, device=features.device))
            continue
        m2, flag = video_m2(features, layout, v, validate)
        out.append((m2 / n).float())
        bad.append(flag)
    return torch.stack(out), torch.stack(bad) if validate else None


def kept_channel_order(var: torch.Tensor) -> torch.Tensor:
    """(V, C') int64 ascending indices of the ``max(1, C // 2)`` lowest variances per video
    (lower index first on ties, NaN last)."""
    order = torch.sort(nan_as_inf(var), dim=1, stable=True).indices
    return torch.sort(order[:, : kept_channels(var.shape[1])], dim=1).values


def keep_from_order(order: torch.Tensor, num_channels: int) -> torch.Tensor:
    keep = torch.zeros((order.shape[0], num_channels), dtype=torch.bool, device=order.device)
    return keep.scatter_(1, order, True)


def _native_channels(features: torch.Tensor, layout: VideoLayout) -> tuple:
    ids = device_layout(layout, features.device)
    return cpu.channel_keep(features, ids, kept_channels(features.shape[1]), float(MAX_ABS))


def select_channels(features: torch.Tensor, layout: VideoLayout, validate: bool, out=None) -> tuple:
    """(V, C) bool kept channels and (V,) bool videos with values out of range (None unless ``validate``)."""
    if cpu.usable(features):
        _, keep, nonfinite = _native_channels(features, layout)
        return keep, write_out(out, nonfinite if validate else None)
    var, nonfinite = channel_variance(features, layout, validate)
    return keep_from_order(kept_channel_order(var), features.shape[1]), write_out(out, nonfinite)


# ---------------------------------------------------------------------------------- steps 2-4
def gaussian_similarity(dist2: torch.Tensor) -> torch.Tensor:
    """``sum_a exp(-d^2 / (2a))``, summed in the reference's order."""
    total = torch.zeros_like(dist2)
    for a in GAUSSIAN_BANDWIDTHS:
        total = total + torch.exp(-dist2 / (2 * a))
    return total


def norms_and_frame_sums(features: torch.Tensor, layout: VideoLayout, v: int, keep: torch.Tensor):
    """Video v's row norms over the ``keep`` (C,) channels (F * T,) float32 and the frame sums of
    its normalised rows (F, C) float32 (zero on the dropped channels): one read. Eager path: per
    chunk the masked float32 rows (:func:`masked_float32`), their norms, and a batched product of
    the weights ``1 / norm`` with the rows."""
    F, T, C = int(layout.num_frames[v]), int(layout.tokens_per_frame[v]), features.shape[1]
    bits = keep_bits(keep, features.dtype)
    frame_sums = torch.empty((F, C), dtype=torch.float32, device=features.device)
    norms = torch.empty(F * T, dtype=torch.float32, device=features.device)
    for f0, x in video_chunks(features, layout, v):
        f = x.shape[0] // T
        xw = masked_float32(x, bits, scratch("masked", tuple(x.shape), x.device))
        norm = torch.linalg.vector_norm(xw, dim=1, out=norms[f0 * T : (f0 + f) * T])
        inv = 1.0 / norm.clamp_min(NORM_EPS)
        torch.bmm(inv.view(f, 1, T), xw.view(f, T, C), out=frame_sums[f0 : f0 + f].view(f, 1, C))
    return norms, frame_sums


def centre_dots(features: torch.Tensor, layout: VideoLayout, v: int, keep, frame_centres, video_centre):
    """(2, F, T) float32: dot products of video v's rows over the kept channels with their frame
    centre and with the video centre (rows not normalised): one read. Eager path: per chunk one
    product with the chunk's f frame centres and the video centre side by side (f + 1 columns:
    faster than a batched product of width 1 on the CPU); each row keeps its own frame's column."""
    F, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
    bits = keep_bits(keep, features.dtype)
    dots = torch.empty((2, F, T), dtype=torch.float32, device=features.device)
    for f0, x in video_chunks(features, layout, v):
        f = x.shape[0] // T
        xw = masked_float32(x, bits, scratch("masked", tuple(x.shape), x.device))
        both = torch.cat([frame_centres[f0 : f0 + f], video_centre[None]]).T
        prod = torch.mm(xw, both).view(f, T, f + 1)
        dots[0, f0 : f0 + f] = torch.diagonal(prod[:, :, :f], dim1=0, dim2=2).T
        dots[1, f0 : f0 + f] = prod[:, :, f]
    return dots


def token_scores(features: torch.Tensor, layout: VideoLayout, keep: torch.Tensor):
    """Scores (N,) and uniqueness (F,). Per video two reads of the rows: the norms and the frame
    sums of the normalised rows (:func:`norms_and_frame_sums`), then the dot products with the
    centres (:func:`centre_dots`), scaled by ``1 / norm`` afterwards. Temporaries: the (F, C)
    centres, a few (N,) vectors, and on the eager path one chunk. Native CPU kernels: the same
    two reads and the rest for every video in one call (:func:`cpu.token_scores`)."""
    if cpu.usable(features):
        return cpu.token_scores(features, device_layout(layout, features.device), keep, NORM_EPS, BANDWIDTHS)
    scores, uniqueness = [], []
    for v in range(layout.num_videos):
        F, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
        norms, frame_sums = norms_and_frame_sums(features, layout, v, keep[v])
        frame_centres = frame_sums / float(T)
        video_centre = frame_sums.sum(dim=0) / float(max(1, F * T))
        dots = centre_dots(features, layout, v, keep[v], frame_centres, video_centre)
        inv = 1.0 / norms.view(F, T).clamp_min(NORM_EPS)
        self_dot = (norms.view(F, T) * inv).square()
        frame_sq = frame_centres.square().sum(dim=1, keepdim=True)  # ||c_f||^2 (F, 1)
        sv = gaussian_similarity((self_dot - 2 * dots[1] * inv + video_centre.dot(video_centre)).clamp_min(0))
        sf = gaussian_similarity((self_dot - 2 * dots[0] * inv + frame_sq).clamp_min(0))
        scores.append((sv + sf).flatten())
        uniqueness.append(-sv.mean(dim=1))
    return nan_as_inf(torch.cat(scores)), torch.cat(uniqueness)
