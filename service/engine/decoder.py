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

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

# A decode step's attention over at most this many keys in all (rows x columns) runs on ONE
# intra-op thread. SDPA's CPU kernel always splits its heads across threads, and each call then
# ends at a barrier that waits for the other thread; on cores shared with other busy processes
# that wait is a scheduler time slice, not the ~20 us the call computes. Profiled on SmolLM2 at
# batch 1 with 2 threads on 2 busy cores, 30 such calls were 75% of a decode step (41 ms per
# call); on one thread the same calls take 1 ms in all, and for so few keys a second thread
# saved nothing even when it got its core (one call, batch 1, 96 keys: 28 us on one thread, 26
# on two; 1,024 keys: 127 and 143 us). See docs/performance.md, "The real base".
SERIAL_ATTENTION_KEYS = 2048


class KVView(Protocol):
    """The cache columns one forward pass reads and writes (a prefill chunk or a decode step)."""

    mask: torch.Tensor  # [B, 1, S, L] bool: query s of row b may attend key column l

    def update(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this pass's ``keys``/``values`` [B, kv_heads, S, head_dim]; return every key
        and value the pass attends to, [B, kv_heads, L, head_dim]."""
        ...


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

    def hidden(self, ids: torch.Tensor, positions: torch.Tensor, kv: KVView) -> torch.Tensor:
        """Final (normed) hidden states [B, S, hidden] of ``ids`` [B, S] at ``positions``."""
        x = self.model.embed_tokens(ids)
        cos, sin = self.model.rotary_emb(x, positions)  # [B, S, head_dim] each
        sin = signed_sin(sin)  # once per pass, not once per layer and tensor
        for i, layer in enumerate(self.model.layers):
            x = x + self._attention(i, layer.self_attn, layer.input_layernorm(x), cos, sin, kv)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.model.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits [..., vocab] of hidden states [..., hidden]."""
        return self.lm_head(hidden)

    def _attention(self, i, attn, h, cos, sin, kv: KVView) -> torch.Tensor:
        b, s, _ = h.shape
        q = attn.q_proj(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        keys, values = kv.update(i, k, v)
        threads = torch.get_num_threads()
        # CPU only: the intra-op thread count means nothing to a GPU kernel
        serial = (threads > 1 and s == 1 and keys.device.type == "cpu"
                  and b * keys.shape[2] <= SERIAL_ATTENTION_KEYS)
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
        return attn.o_proj(out.transpose(1, 2).reshape(b, s, -1))


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
