"""VidCom2's scorer on the ``triton`` backend: the channel choice (channel variance -> channel
keep, 2 launches) and the token scores (centre partials -> centres -> token scores with the frame
uniqueness, 3 launches), for the whole batch of videos, no host read. Kernels: :mod:`vidcom2_kernels.ops`.
"""

from __future__ import annotations

import torch

from ...backends.triton_backend import check_rows, per_video_out
from ...buffers import new_output
from ...layout import VideoLayout
from ...ops import centres as centres_op
from ...ops import select_channels as select_channels_op
from ...ops import token_scores as token_scores_op
from ...ops.common import device_layout


def select_channels(features: torch.Tensor, layout: VideoLayout, validate: bool, out=None) -> tuple:
    check_rows(layout)
    meta = device_layout(layout, features.device)
    nonfinite = per_video_out(out, layout, features.device)
    keep = select_channels_op.select_channels(features, meta, nonfinite)
    return keep, nonfinite if validate else None  # the flags cost nothing here


def token_scores(features: torch.Tensor, layout: VideoLayout, keep: torch.Tensor):
    check_rows(layout)
    meta = device_layout(layout, features.device)
    keep = keep.contiguous()
    arrivals = new_output(layout.total_frames, torch.int32, features.device)  # zeroed by the centres launch
    centres = centres_op.centres(features, keep, meta, arrivals)
    return token_scores_op.token_scores(features, keep, *centres, arrivals, meta)
