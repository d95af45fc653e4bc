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

Edge cases of the released code, for who compares with it: it crashes for videos of 4 frames or
fewer (this package handles them as above); with ``quirks=True`` a 1-frame video keeps nothing
(quirk 3: its only frame is the last of an odd count), so use ``quirks=False`` there. Counts are
``int((1 - p) * T)`` computed in floating point: pass ``retention=1 - p`` exactly as the released
scripts compute it (``retention=0.2`` and ``retention=1 - 0.8`` differ by one token when ``0.2 * T``
is an integer, since ``1 - 0.8 = 0.19999999999999996``).

With ``frame_budgets="vidcom2"`` the per-frame counts are VidCom2's Frame Compression Adjustment
(step 5 of VidCom2, from VidCom2's frame uniqueness) over the whole video instead, with the tokens
of each frame still chosen by DyCoke's similarity; a window's frame 0, which has no anchor, is
then scored against frame 1 of its window (all zeros for a one-frame window).
"""

from __future__ import annotations

import numpy as np

from ...layout import VideoLayout

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


def kept_whole(layout: VideoLayout, quirks: bool = False) -> np.ndarray:
    """(F_total,) bool: frames kept whole, tokens in position order (no similarity choice): each
    window's frame 0, and with ``quirks`` frame 2 of the last window when F is a multiple of 4."""
    fv = layout.frame_video
    local = np.arange(layout.total_frames) - layout.frame_start[:-1][fv]
    whole = local % WINDOW == 0
    if quirks:
        F = layout.num_frames[fv]
        whole |= (F % WINDOW == 0) & (local % WINDOW == 2) & (local >= F - WINDOW)
    return whole


def dycoke_budgets(layout: VideoLayout, retention: np.ndarray, quirks: bool = False) -> np.ndarray:
    """(F_total,) int64 kept count per frame: T for frames kept whole, ``int(r * T)`` otherwise;
    with ``quirks`` 0 for the last frame of an odd frame count."""
    fv = layout.frame_video
    T = layout.frame_tokens
    pruned = np.floor(retention[fv] * T).astype(np.int64)  # int((1 - p) * T): truncation, as int() does
    budgets = np.where(kept_whole(layout, quirks), T, pruned)
    if quirks:
        F = layout.num_frames[fv]
        local = np.arange(layout.total_frames) - layout.frame_start[:-1][fv]
        budgets = np.where((F % 2 == 1) & (local == F - 1), 0, budgets)
    return budgets.astype(np.int64)
