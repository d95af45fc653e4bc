"""DyCoke's scorer on the ``triton`` backend: one launch of the similarity kernel over the whole
batch (and a zeroing of its flags), no host read. Kernel: :mod:`vidcom2_kernels.ops.dycoke_similarity`.
"""

from __future__ import annotations

import numpy as np
import torch

from ...backends.triton_backend import check_rows, per_video_out
from ...layout import VideoLayout
from ...ops import dycoke_similarity as dycoke_similarity_op
from ...ops.common import device_layout, request_arrays


def dycoke_similarity(features: torch.Tensor, layout: VideoLayout, anchors: np.ndarray, validate: bool, out=None):
    check_rows(layout)
    meta = device_layout(layout, features.device)
    request = request_arrays(layout, features.device, anchors=anchors)
    nonfinite = per_video_out(out, layout, features.device).zero_()  # the kernel only sets flags
    scores = dycoke_similarity_op.dycoke_similarity(features, meta, request.anchors, nonfinite)
    return scores, nonfinite if validate else None
