"""The Llama decoder, run by the engine on its own KV cache.

The engine calls the checkpoint's modules (embeddings, norms, projections, MLP, rotary
embedding, LM head) but runs the layers itself, as gpt-fast's ``Transformer.forward`` does:
no transformers cache class, no ``past_key_values``/``cache`` keyword, no attention-mask
helper is involved, so a transformers release that renames or reshapes those cannot change
what the engine computes. What it relies on is the module tree every Llama-family checkpoint
has (the names its weights are saved under) and ``rotary_emb(x, position_ids) -> (cos, sin)``,
which carries the checkpoint's RoPE scaling. One layer, per row b::

    x ──► norm ──► q,k,v proj ──► RoPE(position) ──► kv.update: write k,v into b's cache row
      │                                               └─► attend over b's columns ──► o proj ──► +
      └────────────────────────────────────────────────────────────────────────────────────────┘
    x ──► norm ──► MLP ──► +

The projections may be LoraLinear wrappers: each row then adds its own adapter's update.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from service.engine import products
from service.engine.packing import unpack

# A decode step's attention over at most this many keys in all (rows x columns) runs on ONE
# intra-op thread. SDPA's CPU kernel always splits its heads across threads, and each call then
# ends at a barrier that waits for the other thread; on cores shared with other busy processes
# that wait is a scheduler time slice, not the ~20 us the call computes. Profiled on SmolLM2 at
# batch 1 with 2 threads on 2 busy cores, 30 such calls were 75% of a decode step (41 ms per
# call); on one thread the same calls take 1 ms in all, and for so few keys a second thread
# saved nothing even when it got its core (one call, batch 1, 96 keys: 28 us on one thread, 26
# on two). See docs/performance.md, "The real base". Past a few hundred keys the second thread
# pays: timed again in a process whose only OpenMP team is the caller's (service/engine/
# threads.py), 1 / 2 threads: 256 keys (1 x 256, 2 x 128, 4 x 64) 31-37 / 35-55 us; 512 (8 x
# 64) 88 / 72 us; 1,024 (16 x 64) 205 / 132 us; 2,304 (32 x 72) 658 / 308 us.
SERIAL_ATTENTION_KEYS = 256


class KVView(Protocol):
    """The cache columns one forward pass reads and writes (a prefill chunk or a decode step)."""

    mask: torch.Tensor  # [R, 1, S, L] bool: query s of row r may attend key column l
    # None: the pass's query rows are the attended rows 0..B-1, in order (R = B). Else [B]: the
    # cache row each query row belongs to; attention runs over the rows [0, R) ``update``
    # returns, with each query placed at its row (a row holding none computes a throwaway).
    queries: torch.Tensor | None

    def update(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this pass's ``keys``/``values`` [B, kv_heads, S, head_dim]; return every key
        and value the pass attends to, [R, kv_heads, L, head_dim]."""
        ...


class Part(NamedTuple):
    """Tokens of one forward pass that share a shape and a cache view: ``ids`` and
    ``positions`` [B, S], read and written through ``kv``."""

    ids: torch.Tensor
    positions: torch.Tensor
    kv: KVView


class Decoder:
    """A Llama-family causal LM's modules, called in order. Raises ValueError for a model
    that does not have them (the message names what is missing)."""

    def __init__(self, model: nn.Module):
        # The checkpoint's modules are reached by name: typed as what they are at run time.
        config: Any = model.config
        inner: Any = getattr(model, "model", None)
        for owner, names in (
            (model, ("lm_head",)),
            (inner, ("embed_tokens", "layers", "norm", "rotary_emb")),
        ):
            missing = [n for n in names if not hasattr(owner, n)]
            if missing:
                raise ValueError(
                    f"{type(model).__name__} is not a Llama-family causal LM: no {missing}"
                )
        self.model = inner
        self.lm_head: Any = model.lm_head
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.layers = len(inner.layers)
        self.scaling = self.head_dim**-0.5

    def hidden_parts(self, parts: Sequence[Part]) -> list[torch.Tensor]:
        """One forward pass over several parts (a decode step's rows and a prefill chunk):
        each part's final hidden states [B, S, hidden]. The parts' tokens go through every
        projection and MLP as ONE matrix, so each weight is read once per pass, not once per
        part; only attention runs per part, on its own rows of the cache. A LoRA binding for
        such a pass is a ``lora.Parts`` of the same parts in the same order."""
        if len(parts) == 1:  # as it is: [B, S]
            ids = parts[0].ids
        else:  # packed: [1, T], the parts' tokens one after the other
            ids = torch.cat([p.ids.reshape(-1) for p in parts])[None]
        x = self.model.embed_tokens(ids)
        # [B, S, head_dim] each, per part; sin signed once per pass, not per layer and tensor
        rotations = [self.model.rotary_emb(x, p.positions) for p in parts]
        rotations = [(cos, signed_sin(sin)) for cos, sin in rotations]
        shapes = [p.ids.shape for p in parts]  # each part's [B, S]
        for i, layer in enumerate(self.model.layers):
            h = layer.input_layernorm(x)
            x = x + self._attention(i, layer.self_attn, h, rotations, parts, shapes)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        x = self.model.norm(x)
        if len(parts) == 1:
            return [x]
        return unpack(x.view(-1, x.shape[-1]), shapes)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits [..., vocab] of hidden states [..., hidden].

        Computed as ``(W h^T)^T``, the [vocab, hidden] weight as the left operand, which MKL
        runs 1.4-3.5x faster than ``nn.Linear``'s ``h W^T`` at 1-128 rows on the 58M bench
        Llama's head (``products.py``, ``bench.products``); on a GPU both forms are one cuBLAS
        call with the operands' roles swapped. The result is a transposed view; its consumers
        index it and reduce over the vocabulary, which needs no copy (a copy would be 4 MB per
        step at 32 rows)."""
        flat = hidden.reshape(-1, hidden.shape[-1])
        logits = products.left_product(self.lm_head.weight, flat)
        if self.lm_head.bias is not None:
            logits = logits + self.lm_head.bias
        return logits.reshape(*hidden.shape[:-1], logits.shape[-1])

    def _attention(self, i, attn, h, rotations, parts: Sequence[Part], shapes) -> torch.Tensor:
        # [tokens, features]: every part's rows, one after the other
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        q_all, k_all, v_all = (unpack(proj(h).flatten(0, -2), shapes) for proj in projections)
        outs = []
        for part, (cos, sin), q, k, v in zip(parts, rotations, q_all, k_all, v_all, strict=True):
            # [B, S, heads * head_dim] -> [B, heads, S, head_dim]
            q = q.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)
            k = k.unflatten(-1, (self.kv_heads, self.head_dim)).transpose(1, 2)
            v = v.unflatten(-1, (self.kv_heads, self.head_dim)).transpose(1, 2)
            outs.append(self._attend(i, rope(q, cos, sin), rope(k, cos, sin), v, part.kv))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return attn.o_proj(out.view(*h.shape[:-1], -1))

    def _attend(self, i, q, k, v, kv: KVView) -> torch.Tensor:
        """Attention of ``q`` [B, heads, S, head_dim] over the part's cache columns, with this
        pass's ``k``, ``v`` stored first: [B * S, heads * head_dim]."""
        b, _, s, _ = q.shape
        keys, values = kv.update(i, k, v)
        placed = kv.queries
        if placed is not None:  # each query at its cache row
            q = q.new_zeros(keys.shape[0], *q.shape[1:]).index_copy_(0, placed, q)
        threads = torch.get_num_threads()
        # CPU only: the intra-op thread count means nothing to a GPU kernel
        serial = (threads > 1 and s == 1 and keys.device.type == "cpu"
                  and keys.shape[0] * keys.shape[2] <= SERIAL_ATTENTION_KEYS)
        if serial:
            torch.set_num_threads(1)
        try:
            out = F.scaled_dot_product_attention(  # [B, heads, S, head_dim]
                q,
                keys,
                values,
                attn_mask=kv.mask,
                scale=self.scaling,
                enable_gqa=self.kv_heads != self.heads,
            )
        finally:
            if serial:
                torch.set_num_threads(threads)
        if placed is not None:
            out = out.index_select(0, placed)
        return out.transpose(1, 2).reshape(b * s, -1)


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """``sin`` [..., D] with its first half negated: what ``rope`` takes."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, signed: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` [B, H, S, D] (halves rotated, as Llama checkpoints expect),
    with ``signed`` = ``signed_sin(sin)``. Llama's ``x * cos + cat(-x2, x1) * sin`` equals
    ``x * cos + roll(x, D/2) * signed`` bit for bit (a negation is exact), in 4 ops instead of
    6: at batch 1 a step is ~1,500 small ops over 30 layers, so each op per layer counts."""
    return x * cos[:, None] + x.roll(x.shape[-1] // 2, dims=-1) * signed[:, None]
