"""The engine's own KV cache: one fixed row per sequence, rows taken and given back, never moved.

As gpt-fast's ``KVCache``, it is plain storage the engine's decoder writes into (no
transformers cache class is involved). Per layer::

    keys, values   [rows, kv_heads, columns, head_dim]     rows = max_batch_size

A sequence owns one row from admission to its end; its token at position p sits in column p,
so a row joining or leaving the batch copies nothing: joining writes the prompt's keys and
values into a free row, leaving just returns the row to the free list. ``n`` choices of one
prompt get one row each, filled by the same prefill pass.

Columns grow on demand, to the next power of two that fits the longest row admitted (zero
filled, one copy per growth), up to ``row_tokens``: memory follows the longest sequence
served rather than the worst case, and growth stops after a handful of doublings.
"""

from __future__ import annotations

import torch

MIN_COLUMNS = 128


class KVCache:
    def __init__(
        self,
        layers: int,
        rows: int,
        kv_heads: int,
        head_dim: int,
        row_tokens: int,
        dtype: torch.dtype,
        device: torch.device,
    ):
        self.rows, self.row_tokens = rows, row_tokens
        self._shape = (rows, kv_heads, 0, head_dim)
        self._dtype, self._device = dtype, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.columns = 0
        self._layers = layers
        self._free = list(range(rows))  # kept sorted: the lowest rows are handed out first
        self.reserve(min(MIN_COLUMNS, row_tokens))

    @property
    def bytes_per_token(self) -> int:
        """Keys and values of one token of one row, over all layers."""
        _, heads, _, dim = self._shape
        return 2 * self._layers * heads * dim * torch.empty(0, dtype=self._dtype).element_size()

    @property
    def max_nbytes(self) -> int:
        """Memory once every row can hold ``row_tokens``: 2 x layers x rows x row_tokens x
        kv_heads x head_dim x bytes per element (docs/configuration.md)."""
        return self.bytes_per_token * self.rows * self.row_tokens

    # --- rows ---

    @property
    def free_rows(self) -> int:
        return len(self._free)

    def take(self, k: int) -> list[int]:
        """``k`` free rows, the lowest first (keeps the rows a decode step's attention reads,
        [0, highest in use], short)."""
        assert k <= len(self._free), (k, len(self._free))
        taken, self._free = self._free[:k], self._free[k:]
        return taken

    def give_back(self, row: int) -> None:
        assert row not in self._free, row
        self._free.append(row)
        self._free.sort()

    def reset(self) -> None:
        """Every row free (after a failed step)."""
        self._free = list(range(self.rows))

    # --- writing ---

    def index(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """Where a pass writes: ``rows`` [A], ``columns`` [A, S] -> flat positions [A*H*S] in
        every layer's storage seen as [rows*kv_heads*columns, head_dim]. (An ``index_copy_`` on
        that view is about 20x faster on CPU than indexing rows and columns around a slice.)"""
        _, heads, _, _ = self._shape
        h = torch.arange(heads, device=rows.device)
        return ((rows[:, None, None] * heads + h[None, :, None]) * self.columns
                + columns[:, None, :]).reshape(-1)

    def write(self, layer: int, index: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store ``keys``/``values`` [A, kv_heads, S, head_dim] at ``index`` (from ``index``)."""
        dim = keys.shape[-1]
        self.keys[layer].view(-1, dim).index_copy_(0, index, keys.reshape(-1, dim))
        self.values[layer].view(-1, dim).index_copy_(0, index, values.reshape(-1, dim))

    # --- columns ---

    def reserve(self, tokens: int) -> None:
        """Make room for rows of ``tokens`` tokens (at most ``row_tokens``)."""
        assert tokens <= self.row_tokens, (tokens, self.row_tokens)
        if tokens <= self.columns:
            return
        columns = min(self.row_tokens, max(MIN_COLUMNS, 1 << (tokens - 1).bit_length()))
        rows, heads, _, dim = self._shape
        grown_k, grown_v = [], []
        for i in range(self._layers):
            k = torch.zeros(rows, heads, columns, dim, dtype=self._dtype, device=self._device)
            v = torch.zeros_like(k)
            if self.columns:
                k[:, :, : self.columns] = self.keys[i]
                v[:, :, : self.columns] = self.values[i]
            grown_k.append(k)
            grown_v.append(v)
        self.keys, self.values, self.columns = grown_k, grown_v, columns
