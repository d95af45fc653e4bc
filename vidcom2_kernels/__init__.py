"""vidcom2_kernels: fused Triton kernels for VidCom2 video-token compression.

Public API
----------
compress(features, frames, retention=0.25, *, exact=False, target=None, backend="auto",
         validate=True) -> Compression
Stages (each with a twin of the same name in ``vidcom2_kernels.reference``):
select_channels, token_scores, frame_budgets, select_tokens, gather_rows.

Module map (each imports only those below it): ``constants``, ``layout``, ``buffers`` ->
``records`` (Request, Selection, Compression, argument checks) -> ``dycoke`` (DyCoke's host plan)
-> ``ops/`` (Triton kernels, one file per stage) -> ``backends/`` (contract, reference, torch,
triton, registry) -> ``pipeline`` -> ``api`` (compress), ``stages`` (the public stages) ->
``reference`` (twins) -> ``adapters/`` (transformers, lmms-eval), ``integrations/`` (the vLLM
plugin, loaded by vLLM). Under ``torch.compile``, ``compress`` is the op
``torch.ops.vidcom2_kernels.compress`` (``api.compress_op``).
"""

from .api import BACKENDS, compress
from .constants import GAUSSIAN_BANDWIDTHS, TEMPERATURE, kept_channels
from .layout import VideoLayout, exact_targets, parse_frames
from .records import Compression, Selection
from .stages import frame_budgets, gather_rows, select_channels, select_tokens, token_scores

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
