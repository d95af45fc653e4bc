"""vidcom2_kernels: fused Triton kernels for VidCom2 video-token compression.

Public API
----------
compress(features, frames, retention=0.25, *, exact=False, target=None, backend="auto",
         validate=True) -> Compression
Stages (each with a twin of the same name in ``vidcom2_kernels.reference``):
select_channels, token_scores, frame_budgets, select_tokens, gather_rows.
"""

from .api import BACKENDS, Compression, compress
from .constants import GAUSSIAN_BANDWIDTHS, TEMPERATURE, kept_channels
from .layout import VideoLayout, exact_targets, parse_frames
from .stages import Selection, frame_budgets, gather_rows, select_channels, select_tokens, token_scores

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "Compression",
    "GAUSSIAN_BANDWIDTHS",
    "Selection",
    "TEMPERATURE",
    "VideoLayout",
    "compress",
    "exact_targets",
    "frame_budgets",
    "gather_rows",
    "kept_channels",
    "parse_frames",
    "select_channels",
    "select_tokens",
    "token_scores",
    "__version__",
]
