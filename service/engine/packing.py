"""A pass over several parts (a decode step's rows and a prefill chunk) packs their tokens one
part after the other: [T, features], T the sum of each part's B x S. ``unpack`` gives each
part its own [B, S, features] view back, for the decoder's attention and outputs and for the
LoRA binding's per-part updates."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def unpack(packed: torch.Tensor, shapes: Iterable[tuple[int, ...]]) -> list[torch.Tensor]:
    """Views [B, S, features] of ``packed`` [T, features], one per part's (B, S), in order:
    writing into a view writes into ``packed``."""
    views, at = [], 0
    for b, s in shapes:
        views.append(packed[at : at + b * s].view(b, s, -1))
        at += b * s
    return views
