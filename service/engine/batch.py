"""KV-cache batches whose rows change at token boundaries (TGI's concatenate/filter, left padded).

A batch's cache holds, per layer, keys/values [B, kv_heads, L, head_dim]; row b's real tokens sit
at the right end of the L columns and ``mask[b]`` marks them (left padding). Positions are counted
per row, so a padded row computes exactly what it would alone.

    prefill group  (newcomers, prompt processed in chunks of bounded size)
         │ concat: pad the shorter cache on the left, stack rows
         ▼
    decode batch   ── one token per row per step ──► filter: drop finished rows, then trim the
                                                     columns that have become padding for all
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

_GROWTH = 64  # spare KV columns allocated at a time


class GrowingLayer(DynamicLayer):
    """A DynamicLayer that appends into spare capacity instead of ``torch.cat`` every step
    (which copies the whole cache each token). ``keys``/``values`` are views of the filled
    columns; when batch operations replace them, the next update re-buffers once."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._keys_view: torch.Tensor | None = None
        self._kbuf = self._vbuf = torch.empty(0)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        filled = self.keys.shape[-2] if self.keys.numel() else 0
        need = filled + key_states.shape[-2]  # key_states: [B, kv_heads, S, head_dim]
        stale = self._keys_view is None or self.keys is not self._keys_view
        if stale or need > self._kbuf.shape[-2]:
            b, h, _, d = key_states.shape
            self._kbuf = key_states.new_empty(b, h, need + _GROWTH, d)
            self._vbuf = value_states.new_empty(b, h, need + _GROWTH, d)
            if filled:
                self._kbuf[:, :, :filled] = self.keys
                self._vbuf[:, :, :filled] = self.values
        self._kbuf[:, :, filled:need] = key_states
        self._vbuf[:, :, filled:need] = value_states
        self.keys = self._keys_view = self._kbuf[:, :, :need]
        self.values = self._vbuf[:, :, :need]
        return self.keys, self.values


def new_cache() -> DynamicCache:
    """An empty KV cache whose layers grow in place (see GrowingLayer)."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer
    return cache


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device):
    """ids, mask, positions, each [n, L], for prompts right-aligned in L = longest columns."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as HF generate: 0 at each row's first token
    return ids.to(device), mask.to(device), positions.to(device)


def forward(
    model: PreTrainedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: DynamicCache,
    every_position: bool = False,
) -> torch.Tensor:
    """Run ``ids`` [B, S] after ``cache``; ``mask`` [B, past + S]. Returns last logits [B, V],
    or with ``every_position`` the logits of every position [B, S, V]."""
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=0 if every_position else 1,
    )
    return out.logits if every_position else out.logits[:, -1, :]


# Receives a prefill chunk's logits [n, S, V], the token each position predicts [n, S] and
# which of those are prompt tokens [n, S] (bool): prompt log-probabilities are read from them.
PositionsSink = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


class PrefillGroup:
    """Prompts of newcomers, processed ``chunk`` columns at a time into their own cache."""

    def __init__(self, prompts: list[list[int]], pad_id: int, device: torch.device):
        self.ids, self.mask, self.positions = left_pad(prompts, pad_id, device)
        self.cache = new_cache()
        self.done = 0  # columns already in the cache

    @property
    def width(self) -> int:
        return self.ids.shape[1]

    @property
    def finished(self) -> bool:
        return self.done == self.width

    def step(
        self, model: PreTrainedModel, token_budget: int, positions_sink: PositionsSink | None = None
    ) -> torch.Tensor | None:
        """Process the next chunk (at most ``token_budget`` tokens, padding included, but at
        least one column). Returns the last logits [n, V] once the whole prompt is in. With
        ``positions_sink``, every position's logits go to it first (see PositionsSink)."""
        rows = self.ids.shape[0]
        end = min(self.width, self.done + max(1, token_budget // rows))
        logits = forward(
            model,
            self.ids[:, self.done : end],
            self.mask[:, :end],
            self.positions[:, self.done : end],
            self.cache,
            every_position=positions_sink is not None,
        )
        if positions_sink is not None:
            # Column c predicts column c + 1: a prompt token when c is (left padding) and is
            # not the last column, whose prediction is the first generated token.
            targets = self.ids[:, self.done + 1 : end + 1]
            known = self.mask[:, self.done : end].bool()
            if end == self.width:
                targets = torch.cat([targets, self.ids[:, -1:]], dim=1)  # any id: not a target
                known[:, -1] = False
            positions_sink(logits, targets, known)
            logits = logits[:, -1, :]
        self.done = end
        return logits if self.finished else None


@dataclass
class DecodeBatch:
    """Rows generating one token per step: a shared left-padded cache.

    ``mask`` [B, L] covers the cached columns; ``next_ids`` [B] are the tokens to feed next, at
    ``positions`` [B].
    """

    cache: DynamicCache
    mask: torch.Tensor
    next_ids: torch.Tensor
    positions: torch.Tensor

    @classmethod
    def from_prefill(cls, group: PrefillGroup, first_tokens: torch.Tensor) -> DecodeBatch:
        return cls(group.cache, group.mask, first_tokens, group.positions[:, -1] + 1)

    def __len__(self) -> int:
        return self.next_ids.shape[0]

    def step(self, model: PreTrainedModel) -> torch.Tensor:
        """Feed ``next_ids``; returns logits [B, V]. The caller sets ``next_ids`` afterwards."""
        ones = torch.ones_like(self.mask[:, :1])
        self.mask = torch.cat([self.mask, ones], dim=1)
        logits = forward(
            model, self.next_ids[:, None], self.mask, self.positions[:, None], self.cache
        )
        self.positions = self.positions + 1
        return logits

    def filter(self, rows: list[int]) -> None:
        """Keep only ``rows`` (ascending), then drop columns that are padding in every row."""
        if rows != list(range(len(self))):
            index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
            for layer in self.cache.layers:
                layer.keys = layer.keys.index_select(0, index)
                layer.values = layer.values.index_select(0, index)
            self.mask = self.mask.index_select(0, index)
            self.next_ids = self.next_ids.index_select(0, index)
            self.positions = self.positions.index_select(0, index)
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else self.mask.shape[1]
        if first > 0:
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]
            self.mask = self.mask[:, first:]

    def concat(self, other: DecodeBatch) -> None:
        """Append ``other``'s rows; the shorter cache is padded on the left."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = _stack_left_padded(mine.keys, theirs.keys, width)
            mine.values = _stack_left_padded(mine.values, theirs.values, width)
        self.mask = _stack_left_padded(self.mask, other.mask, width)
        self.next_ids = torch.cat([self.next_ids, other.next_ids])
        self.positions = torch.cat([self.positions, other.positions])


def _stack_left_padded(a: torch.Tensor, b: torch.Tensor, width: int) -> torch.Tensor:
    """Rows of ``a`` then ``b``, each right-aligned in ``width`` along the sequence dim.

    Works for caches [B, H, L, D] (sequence dim 2) and masks [B, L] (sequence dim 1)."""
    dim = 2 if a.dim() == 4 else 1
    shape = list(a.shape)
    shape[0], shape[dim] = a.shape[0] + b.shape[0], width
    out = a.new_zeros(shape)
    la, lb = a.shape[dim], b.shape[dim]
    out[: a.shape[0]].narrow(dim, width - la, la).copy_(a)
    out[a.shape[0] :].narrow(dim, width - lb, lb).copy_(b)
    return out
