"""DyCoke's scorer on the ``torch`` backend: the cosine similarity of every token with the
same-position token of its frame's anchor frame. On the CPU one native pass a video
(:func:`cpu.dycoke_similarity`) where :func:`cpu.usable`; elsewhere per chunk in float32 scratch.
"""

from __future__ import annotations

import numpy as np
import torch

from ... import cpu
from ...backends.contract import nan_as_inf, write_out
from ...backends.torch_backend import as_float32, out_of_range, video_chunks
from ...constants import COSINE_EPS, MAX_ABS
from ...device_layout import request_arrays
from ...layout import VideoLayout


def dycoke_similarity(features: torch.Tensor, layout: VideoLayout, anchors: np.ndarray, validate: bool, out=None):
    """DyCoke's scores (N,): cosine similarity with the same-position token of the frame's anchor
    (0 without one); and (V,) bool, the video holds a value out of range (:func:`out_of_range`;
    None unless ``validate``). Native CPU kernels: one pass over the rows (each anchor row read
    again beside its row). Otherwise per chunk: the anchor frames gathered, both sides in float32
    scratch buffers."""
    scores, nonfinite = [], []
    device_anchors = request_arrays(layout, features.device, anchors=anchors).anchors
    for v in range(layout.num_videos):
        F, T = int(layout.num_frames[v]), int(layout.tokens_per_frame[v])
        f_start = int(layout.frame_start[v])
        local = device_anchors[f_start : f_start + F]
        local = torch.where(local >= 0, local - f_start, local)  # frame numbers inside the video
        video = features[int(layout.row_start[v]) : int(layout.row_start[v + 1])]
        if cpu.usable(features):
            sim, bad = cpu.dycoke_similarity(video, F, T, local, COSINE_EPS, float(MAX_ABS))
            scores.append(sim)
            nonfinite.append(bad if validate else None)
            continue
        video = video.view(F, T, -1)
        bad = []
        for f0, x in video_chunks(features, layout, v):
            f = x.shape[0] // T
            a = local[f0 : f0 + f]
            x = as_float32(x.view(f, T, -1), "dycoke_x")
            y = as_float32(video.index_select(0, a.clamp(min=0)), "dycoke_y")
            if validate:
                bad.append(out_of_range(x))
            norms = torch.linalg.vector_norm(x, dim=2).clamp_min(COSINE_EPS)
            norms *= torch.linalg.vector_norm(y, dim=2).clamp_min(COSINE_EPS)
            sim = torch.linalg.vecdot(x, y, dim=2) / norms
            scores.append(torch.where((a >= 0)[:, None], sim, torch.zeros_like(sim)).flatten())
        nonfinite.append(torch.stack(bad).any() if validate else None)
    return nan_as_inf(torch.cat(scores)), write_out(out, torch.stack(nonfinite) if validate else None)
