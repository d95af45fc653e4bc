"""FastVID's kernels on the ``triton`` backend: for now the torch backend's batched functions
(:mod:`.torch_ops`) run on the device; the selection and gather after them are the fused shared
stages. (A fused DPC-kNN kernel, on the shape of VisionZip's density kernel, is the next step.)
"""

from __future__ import annotations

from .torch_ops import context_scores, frame_scores, merge_context

__all__ = ["context_scores", "frame_scores", "merge_context"]
