"""DyCoke's first stage, temporal token merging (TTM): the plan every backend follows.

DyCoke (Tao et al., CVPR 2025) works in windows of 4 frames. Frame 0 of a window is kept whole;
frames 1 and 2 keep the ``int((1 - p) * T)`` tokens least cosine-similar to the same-position
tokens of frame 0, frame 3 likewise against frame 2 (all similarities against unpruned frames).
``p`` is DyCoke's merging ratio (``dycoke_k`` in its scripts); this package takes the kept
fraction ``retention = 1 - p`` (DyCoke's README example p = 0.7 is ``retention=0.3``).

Token scores are those similarities (low = kept first, lower index on ties, as for VidCom2), so the
selection, the exact-count reconcile and the gather are VidCom2's own kernels.

Quirks of the released code, reproduced with ``quirks=True`` (documented, not the default):
1. kept tokens come out ordered by similarity rather than by position (only the reference's
   :func:`vidcom2_kernels.reference.dycoke_order` reproduces this order; compress always returns
   ascending indices, the kept set is the same);
2. when the frame count is a multiple of 4, frame 2 of the last window is never pruned;
3. with an odd frame count, the last frame is dropped (kept count 0).
Without quirks a short last window is handled like any other (its frames 1-3 as far as they go).

With ``frame_budgets="vidcom2"`` the per-frame counts are VidCom2's Frame Compression Adjustment
(step 5 of VidCom2, from VidCom2's frame uniqueness) over the whole video instead, with the tokens
of each frame still chosen by DyCoke's similarity; a window's frame 0, which has no anchor, is
then scored against frame 1 of its window (all zeros for a one-frame window).
"""

from __future__ import annotations

import numpy as np

from .layout import VideoLayout

WINDOW = 4
NO_ANCHOR = -1


def anchor_frames(layout: VideoLayout, fca: bool = False) -> np.ndarray:
    """(F_total,) global index of the frame each frame is compared with, or -1 (keep whole).

    Position in window 1 and 2 -> frame 0 of the window; 3 -> frame 2. With ``fca`` a window's
    frame 0 is compared with frame 1 when the window has one.
    """
    fv = layout.frame_video
    local = np.arange(layout.total_frames) - layout.frame_start[:-1][fv]
    pos = local % WINDOW
    window_start = np.arange(layout.total_frames) - pos
    anchor = np.where(pos == 3, window_start + 2, window_start)
    anchor = np.where(pos == 0, NO_ANCHOR, anchor)
    if fca:
        has_next = local + 1 < layout.num_frames[fv]
        anchor = np.where((pos == 0) & has_next, np.arange(layout.total_frames) + 1, anchor)
    return anchor.astype(np.int64)


def dycoke_budgets(layout: VideoLayout, retention: np.ndarray, quirks: bool = False) -> np.ndarray:
    """(F_total,) int64 kept count per frame: T for window anchors, ``int(r * T)`` otherwise."""
    fv = layout.frame_video
    T = layout.frame_tokens
    local = np.arange(layout.total_frames) - layout.frame_start[:-1][fv]
    pos = local % WINDOW
    pruned = np.floor(retention[fv] * T).astype(np.int64)  # int((1 - p) * T): truncation, as int() does
    budgets = np.where(pos == 0, T, pruned)
    if quirks:
        F = layout.num_frames[fv]
        last_window_frame2 = (F % WINDOW == 0) & (pos == 2) & (local >= F - WINDOW)
        budgets = np.where(last_window_frame2, T, budgets)
        budgets = np.where((F % 2 == 1) & (local == F - 1), 0, budgets)
    return budgets.astype(np.int64)
