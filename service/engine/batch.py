"""The two kinds of forward pass on the engine's KV cache: prefill chunks and decode steps.

Every sequence owns one cache row (``kv_cache.py``) and its token at position p sits in
column p, so rows never move::

    prefill group  (newcomers' prompts, right padded, processed in chunks of bounded size)
         │ writes each prompt's keys/values into its rows (n rows for n choices of one prompt)
         ▼
    decode batch   ── one token per running row per step ──►
                      a finished row is handed back to the cache; no key or value is copied

The decode batch has an order of its own (the scheduler's running order): a step's
projections and MLP compute exactly its running rows, whichever cache rows they hold. When rows
leave, the batch closes the gap by moving its last rows into the vacated positions
(``compaction``): a few token ids and adapter rows move, the cache rows stay where they are.
Attention reads the cache rows in place: each running row's query is placed at its cache row,
and a free cache row in between (a "hole") computes a throwaway attention output that is
never read. Without holes (rows 0..A-1 in order, the usual case after a burst) nothing is
placed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

from service.engine.decoder import Decoder, Part
from service.engine.kv_cache import KVCache


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


class _PrefillView:
    """Columns [start, end) of the group's prompts: written into every row of each prompt
    (``targets``), attended over [0, end) of the prompt's first row."""

    queries: torch.Tensor | None = None  # one query row per prompt, over its first row

    def __init__(self, group: PrefillGroup, start: int, end: int):
        self.cache, self.start, self.end = group.cache, start, end
        self.rows, self.source = group.first_rows, group.source
        keys = torch.arange(end, device=self.rows.device)
        columns = torch.arange(start, end, device=self.rows.device)
        targets = group.targets
        self.index = self.cache.index(targets, columns.expand(len(targets), -1))
        causal = keys[None, :] <= columns[:, None]  # [S, end]
        real = keys[None, :] < group.lengths[:, None]  # [P, end]: padding is never a key
        self.mask = (causal[None] & real[:, None])[:, None]  # [P, 1, S, end]

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor):
        if self.source is None:  # one row per prompt
            self.cache.write(layer, self.index, keys, values)
        else:  # n rows per prompt: the same prefill fills them all
            source = self.source
            self.cache.write(
                layer, self.index, keys.index_select(0, source), values.index_select(0, source)
            )
        if self.start == 0:  # nothing earlier to read back
            return keys, values
        cache_k, cache_v = self.cache.keys[layer], self.cache.values[layer]
        return cache_k[self.rows, :, : self.end], cache_v[self.rows, :, : self.end]


# Receives prompt p's logits [k, V] at k consecutive columns of a prefill chunk and the prompt
# tokens those columns predict [k] (the next column's): prompt log-probabilities are read from
# them chunk by chunk, so a long prompt never holds [length, V] logits at once.
PositionsSink = Callable[[int, torch.Tensor, torch.Tensor], None]


class PrefillGroup:
    """Prompts of newcomers, processed ``chunk`` columns at a time into their cache rows.

    ``rows[p]`` are the cache rows of prompt p (one per choice; all get its keys/values)."""

    def __init__(
        self,
        prompts: list[list[int]],
        rows: list[list[int]],
        pad_id: int,
        cache: KVCache,
    ):
        device = cache.keys[0].device
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        for p, prompt in enumerate(prompts):
            ids[p, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
        self.ids = ids.to(device)  # [P, W], right padded: position = column
        self.positions = torch.arange(width, device=device).expand(len(prompts), width)
        self.lengths = torch.tensor([len(p) for p in prompts], device=device)  # [P]
        self.cache = cache
        self.first_rows = torch.tensor([r[0] for r in rows], device=device)
        self.targets = torch.tensor([row for r in rows for row in r], device=device)
        fanned_out = any(len(r) > 1 for r in rows)
        self.source = (
            torch.tensor([p for p, r in enumerate(rows) for _ in r], device=device)
            if fanned_out
            else None
        )
        self.last = torch.zeros(len(prompts), dtype=torch.long)  # [P] index of the last token
        self._last_hidden: torch.Tensor | None = None  # [P, hidden], filled chunk by chunk
        self.done = 0  # columns already in the cache
        self._chunk = (0, 0)  # the columns of the part handed out last

    @property
    def width(self) -> int:
        return self.ids.shape[1]

    @property
    def finished(self) -> bool:
        return self.done == self.width

    def part(self, token_budget: int) -> Part:
        """The next chunk of the prompts as a forward pass's part: at most ``token_budget``
        tokens, padding included, but at least one column. Pass its hidden states to
        ``after``."""
        prompts = self.ids.shape[0]
        start, end = self.done, min(self.width, self.done + max(1, token_budget // prompts))
        self._chunk = (start, end)
        return Part(self.ids[:, start:end], self.positions[:, start:end],
                    _PrefillView(self, start, end))

    def after(
        self,
        decoder: Decoder,
        hidden: torch.Tensor,
        positions_sink: PositionsSink | None = None,
        every_position: Collection[int] = (),
    ) -> torch.Tensor | None:
        """Take the chunk's ``hidden`` states [P, chunk, hidden]. Returns each prompt's last
        logits [P, V] once every prompt is in. The prompts in ``every_position`` also hand
        their chunk's logits to ``positions_sink`` (see PositionsSink)."""
        (start, end), prompts = self._chunk, self.ids.shape[0]
        if positions_sink is not None:
            self._every_position(decoder, hidden, start, end, positions_sink, every_position)
        # a prompt's last token may sit in an earlier chunk than the longest prompt's
        last = self.lengths - 1
        here = ((last >= start) & (last < end)).nonzero()[:, 0]
        if len(here):
            if self._last_hidden is None:
                self._last_hidden = hidden.new_zeros(prompts, hidden.shape[-1])
            self._last_hidden[here] = hidden[here, last[here] - start]
        self.done = end
        if not self.finished:
            return None
        assert self._last_hidden is not None
        return decoder.logits(self._last_hidden)

    def step(
        self,
        decoder: Decoder,
        token_budget: int,
        positions_sink: PositionsSink | None = None,
        every_position: Collection[int] = (),
    ) -> torch.Tensor | None:
        """``part`` and ``after`` in a pass of its own."""
        hidden = decoder.hidden_parts([self.part(token_budget)])[0]
        return self.after(decoder, hidden, positions_sink, every_position)

    def _every_position(
        self,
        decoder: Decoder,
        hidden: torch.Tensor,
        start: int,
        end: int,
        sink: PositionsSink,
        prompts: Collection[int],
    ) -> None:
        # Column c predicts column c + 1: a prompt token while c + 1 < the prompt's length
        # (the last token's prediction is the first generated token; padding predicts nothing).
        for p in prompts:
            stop = min(end, int(self.lengths[p]) - 1)
            if stop > start:
                logits = decoder.logits(hidden[p, : stop - start])  # [k, V]
                sink(p, logits, self.ids[p, start + 1 : stop + 1])


def compaction(keep: list[int], size: int) -> list[int]:
    """The positions of a batch of ``size`` rows that go on (``keep``), in their new order:
    a kept row below ``len(keep)`` stays where it is, and the kept rows above fill the
    positions the others left, so only those move."""
    n = len(keep)
    assert all(0 <= j < size for j in keep), (keep, size)
    above = [j for j in keep if j >= n]
    kept = set(keep)
    return [i if i in kept else above.pop() for i in range(n)]


class _DecodeView:
    """One new column per running row (cache rows ``rows`` [A], positions ``positions`` [A]),
    attended over each row's columns [0, position], in place in the cache's rows [0, width)."""

    def __init__(self, cache: KVCache, rows: list[int], positions: torch.Tensor):
        device = positions.device
        self.cache, self.width = cache, max(rows) + 1
        index = torch.tensor(rows, device=device)
        # the cache row of each query row, unless they are rows 0..A-1 in order
        self.queries = None if rows == list(range(len(rows))) else index
        self.index = cache.index(index, positions[:, None])
        self.span = span = int(positions.max()) + 1
        if self.queries is not None:  # by cache row; a hole attends to column 0 only
            positions = positions.new_zeros(self.width).index_copy_(0, index, positions)
        keys = torch.arange(span, device=device)
        self.mask = (keys[None, :] <= positions[:, None])[:, None, None]  # [width, 1, 1, span]

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor):
        # keys [A, kv_heads, 1, head_dim]: each running row writes its column
        self.cache.write(layer, self.index, keys, values)
        cache_k, cache_v = self.cache.keys[layer], self.cache.values[layer]
        return cache_k[: self.width, :, : self.span], cache_v[: self.width, :, : self.span]


class DecodeBatch:
    """The next token, position and cache row of every running row, in batch order; a step
    feeds them all."""

    def __init__(self, cache: KVCache):
        self.cache = cache
        device = cache.keys[0].device
        self.next_ids = torch.zeros(cache.rows, dtype=torch.long, device=device)
        self.positions = torch.zeros(cache.rows, dtype=torch.long, device=device)
        self.rows: list[int] = []  # the cache row of each batch row

    def join(self, rows: list[int], tokens: torch.Tensor, positions: list[int]) -> None:
        """Sequences in cache rows ``rows`` join after the running rows: feed ``tokens`` [k]
        at ``positions`` next."""
        at = slice(len(self.rows), len(self.rows) + len(rows))
        self.next_ids[at] = tokens.to(self.next_ids.device)
        self.positions[at] = torch.tensor(positions, device=self.positions.device)
        self.rows.extend(rows)

    def keep(self, order: list[int]) -> None:
        """The rows at positions ``order`` go on, row ``order[i]`` now at position i (from
        ``compaction``); the others have left."""
        index = torch.tensor(order, dtype=torch.long, device=self.next_ids.device)
        n = len(order)
        self.next_ids[:n] = self.next_ids.index_select(0, index)
        self.positions[:n] = self.positions.index_select(0, index)
        self.rows = [self.rows[j] for j in order]

    def part(self) -> Part:
        """The running rows' next tokens as a forward pass's part. Pass its hidden states to
        ``after``."""
        n = len(self.rows)
        view = _DecodeView(self.cache, self.rows, self.positions[:n])
        return Part(self.next_ids[:n, None], self.positions[:n, None], view)

    def after(self, decoder: Decoder, hidden: torch.Tensor) -> torch.Tensor:
        """Take the step's ``hidden`` states [A, 1, hidden]; returns the logits [A, V] of the
        running rows. The caller sets their ``next_ids``."""
        self.positions[: len(self.rows)] += 1
        return decoder.logits(hidden[:, 0])
