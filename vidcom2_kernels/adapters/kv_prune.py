"""DyCoke's second stage: pruning the visual part of the KV cache during decoding, without eager
attention weights.

Semantics (per decoding step, i.e. every forward with a single query token; prefill untouched):

1. at decoder layer ``layer``, the attention of the current query over the cached keys is computed
   from q and K by the backend's ``attention_row`` (a small kernel on Triton), softmax over the
   valid keys, averaged over heads;
2. if no choice exists yet, or the cosine similarity of that attention over the visual positions
   with the attention at the last choice is below ``drift`` (0.9), the kept visual positions are
   chosen again: the ``int((1 - ratio) * V)`` visual tokens of highest attention (lower index first
   on ties), with VidCom2's selection kernels;
3. layers ``layer`` and deeper attend to all non-visual keys and the kept visual keys only; layers
   before ``layer`` see everything.

Where this differs from the released DyCoke code (documented, not reproduced; reported by the
adversarial review of issue 10): the attention that drives the choice is the one computed at layer
``layer`` itself from its q and K; on a step where the attention is stable (cosine >= ``drift``)
the previous choice is kept as it is; and the drift is measured against the attention at the last
re-choice, not against the previous step's.

It plugs in as a registered attention function wrapping the model's own (sdpa, eager or
flash-attn): q and K arrive already rotated, whatever the family. At ``ratio=0`` every visual token
is kept and no mask is touched, so generation is bit-identical. All of it runs on the device with no
host sync per step (the kept counts are known on the host from the prompt).
"""

from __future__ import annotations

import contextlib
import numbers
import sys
import threading
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..backends import resolve
from ..buffers import to_device
from ..layout import VideoLayout
from .patching import installed

#: id(text config) -> the KVPruneState of the generate() call in progress on that model; an
#: attention module finds its model's state through its own ``config`` (the text config object)
_ACTIVE: dict = {}
_ACTIVE_LOCK = threading.Lock()
#: registered attention name -> kv_pruning calls using it (unregistered when the last one ends)
_REGISTERED: dict = {}


@dataclass
class KVPrune:
    """DyCoke's KV-cache pruning settings: ``ratio`` (p_kv) of the visual tokens dropped from layer
    ``layer`` on, re-chosen when the attention drifts (cosine below ``drift``)."""

    ratio: float = 0.7
    layer: int = 3
    drift: float = 0.9

    def __post_init__(self):
        for name, kind in (("ratio", numbers.Real), ("layer", numbers.Integral), ("drift", numbers.Real)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise TypeError(
                    f"kv {name} must be {'an int' if kind is numbers.Integral else 'a number'}, got {value!r}"
                )
        if not (0.0 <= self.ratio < 1.0):
            raise ValueError(f"kv ratio must be in [0, 1), got {self.ratio}")
        if self.layer < 0:
            raise ValueError(f"kv layer must be >= 0, got {self.layer}")
        if not (-1.0 <= self.drift <= 1.0):  # a cosine similarity's range (also rejects NaN)
            raise ValueError(f"kv drift must be in [-1, 1], got {self.drift}")

    def check(self, model) -> None:
        """The layer exists in ``model``'s language model (a layer past the last would prune nothing)."""
        layers = model.config.get_text_config().num_hidden_layers
        if self.layer >= layers:
            raise ValueError(f"kv layer {self.layer} does not exist: the language model has {layers} layers")


class KVPruneState:
    """The choice carried across the decoding steps of one generate() call."""

    def __init__(self, config: KVPrune, visual: torch.Tensor, backend: str = "auto"):
        self.config, self.backend = config, resolve(backend, visual.device)
        self.visual = visual.bool()  # (B, L_prompt): visual positions of the pruned prompt
        self.keep = None  # (B, L_prompt) bool: kept positions (all non-visual ones are kept)
        self.ref = None  # (sum V_b,) attention over the visual positions at the last choice
        self.step_mask = None  # (B, S) key mask of the current step, built once for all its layers
        self.steps = 0
        self._plan(self.visual)

    def _plan(self, visual: torch.Tensor) -> None:
        """Host-side constants of a batch, once per generate() call before decoding: per row with
        visual tokens its count and kept count (at least 1), the flat indices of the visual keys.
        Rows without visual tokens keep every key."""
        counts = [n for n in visual.sum(dim=1).tolist() if n]
        self.layout = VideoLayout.from_pairs([(1, n) for n in counts])  # a row's visual keys: one "frame"
        self.targets = np.array([max(1, int((1.0 - self.config.ratio) * n)) for n in counts], dtype=np.int64)
        self.targets_t, self.num_kept = to_device(self.targets, visual.device), int(self.targets.sum())
        self.prunes = bool((self.targets < np.array(counts, dtype=np.int64)).any())
        L = visual.shape[1]
        flat = np.flatnonzero(visual.cpu().numpy().reshape(-1))
        self.flat_index = to_device(flat, visual.device)
        self.row_of = to_device(flat // L, visual.device)
        self.has_visual = bool(counts)

    @property
    def kept(self) -> list:
        """Kept visual keys of every row that has visual tokens."""
        return self.targets.tolist()

    def _expand(self, batch: int) -> None:
        """generate() repeats rows for beams / several return sequences: follow it."""
        if batch != self.visual.shape[0]:
            factor = batch // self.visual.shape[0]
            self.visual = self.visual.repeat_interleave(factor, dim=0)
            self.keep = None if self.keep is None else self.keep.repeat_interleave(factor, dim=0)
            self.ref = None
            self._plan(self.visual)

    def update(self, query, key, valid, scale) -> None:
        """Layer ``layer`` of a decoding step: the attention row, then the (re-)choice."""
        self._expand(query.shape[0])
        if not self.has_visual:
            return
        att = self.backend.attention_row(query[:, :, 0, :], key, valid, scale)  # (B, S)
        L = self.visual.shape[1]
        att_vis = att[:, :L].reshape(-1).index_select(0, self.flat_index)  # (sum V_b,)
        # each row's visual keys are one "frame" whose budget is its target: the per-frame selection is
        # the exact count already (no reconcile launches, no host read: the kept count is known)
        chosen = self.backend.select_tokens(-att_vis, self.layout, self.targets_t, None, self.num_kept).mask
        new_keep = ~self.visual.clone()
        new_keep.view(-1).index_copy_(0, self.flat_index, chosen)
        if self.keep is None:
            self.keep, self.ref = new_keep, att_vis
        else:
            B = self.visual.shape[0]
            dot = torch.zeros(B, device=att.device).index_add_(0, self.row_of, att_vis * self.ref)
            n1 = torch.zeros(B, device=att.device).index_add_(0, self.row_of, att_vis * att_vis)
            n2 = torch.zeros(B, device=att.device).index_add_(0, self.row_of, self.ref * self.ref)
            redo = dot / (n1.sqrt() * n2.sqrt()).clamp_min(1e-12) < self.config.drift  # (B,)
            self.keep = torch.where(redo[:, None], new_keep, self.keep)
            self.ref = torch.where(redo.index_select(0, self.row_of), att_vis, self.ref)
        self.step_mask = None
        self.steps += 1

    def key_mask(self, S: int, device) -> torch.Tensor:
        """(B, S) bool over the keys of this step: the choice, then every generated token. Built at
        the first pruned layer of a step and reused by the deeper ones."""
        if self.step_mask is None or self.step_mask.shape[1] != S:
            tail = torch.ones((self.keep.shape[0], S - self.keep.shape[1]), dtype=torch.bool, device=device)
            self.step_mask = torch.cat([self.keep, tail], dim=1)
        return self.step_mask


def _valid_keys(attention_mask, B: int, S: int, device) -> torch.Tensor:
    """(B, S) bool keys the current query may attend to, from the mask the model passes:
    None (all), a 4-D bool or additive float mask (its last query row), or a 2-D padding mask."""
    if attention_mask is None:
        return torch.ones((B, S), dtype=torch.bool, device=device)
    m = attention_mask[:, 0, -1, :] if attention_mask.dim() == 4 else attention_mask
    m = m[:, -S:]
    if m.dtype == torch.bool:
        valid = m
    elif m.dtype.is_floating_point and attention_mask.dim() == 4:
        valid = m > torch.finfo(m.dtype).min / 2  # additive: 0 attends, the lowest float does not
    else:
        valid = m != 0
    return valid.expand(B, S)


def _restrict(attention_mask, keep: torch.Tensor):
    """The model's mask with the pruned keys removed, in the mask's own form."""
    if attention_mask is None:
        return keep[:, None, None, :]
    if attention_mask.dim() == 2:  # flash-attn padding mask
        return attention_mask * keep.to(attention_mask.dtype)
    if attention_mask.dtype == torch.bool:
        return attention_mask & keep[:, None, None, -attention_mask.shape[-1] :]
    lowest = torch.finfo(attention_mask.dtype).min
    return attention_mask.masked_fill(~keep[:, None, None, -attention_mask.shape[-1] :], lowest)


def wrap_attention(base_name: str):
    """An attention function that applies the active KV pruning, then calls ``base_name``'s."""

    def attention(module, query, key, value, attention_mask, **kwargs):
        base = ALL_ATTENTION_FUNCTIONS[base_name] if base_name != "eager" else _eager(module)
        state = _ACTIVE.get(id(getattr(module, "config", None)))
        layer = getattr(module, "layer_idx", None)
        if state is not None and layer is not None and query.shape[2] == 1 and layer >= state.config.layer:
            S = key.shape[2]
            if layer == state.config.layer:
                valid = _valid_keys(attention_mask, query.shape[0], S, query.device)
                state.update(query, key, valid, getattr(module, "scaling", query.shape[-1] ** -0.5))
            if state.prunes and state.keep is not None:
                attention_mask = _restrict(attention_mask, state.key_mask(S, query.device))
        return base(module, query, key, value, attention_mask, **kwargs)

    return attention


def _eager(module):
    """The eager attention function of the module's own modeling file."""
    return sys.modules[type(module).__module__].eager_attention_forward


@contextlib.contextmanager
def kv_pruning(model, config: KVPrune, visual: torch.Tensor, backend: str = "auto"):
    """While active, decoding steps of ``model`` prune the visual KV cache as described above. Each
    model has its own state, so models in several threads do not mix; one model generating in two
    calls at once (the attention implementation is an attribute of its config) is refused."""
    text_config = model.config.get_text_config()
    state = KVPruneState(config, visual, backend)
    with _ACTIVE_LOCK:
        if id(text_config) in _ACTIVE:
            raise RuntimeError(
                "this model is already generating with DyCoke KV pruning (another thread, or a generate() "
                "inside generate()); run one generate() at a time per model, or use a copy of the model"
            )
        base = text_config._attn_implementation or "sdpa"
        name = f"vidcom2_dycoke_kv_{base}"
        if not _REGISTERED.get(name):
            AttentionInterface.register(name, wrap_attention(base))
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
        _REGISTERED[name] = _REGISTERED.get(name, 0) + 1
        _ACTIVE[id(text_config)] = state
    try:
        with installed([(text_config, "_attn_implementation", name)]):
            yield state
    finally:
        with _ACTIVE_LOCK:
            del _ACTIVE[id(text_config)]
            _REGISTERED[name] -= 1
            if not _REGISTERED[name]:  # transformers has no unregister: its registries are these dicts
                del _REGISTERED[name]
                for interface in (AttentionInterface, AttentionMaskInterface):
                    getattr(interface, "_global_mapping", {}).pop(name, None)
