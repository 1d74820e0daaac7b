"""The small vocabularies every package shares about adapters (docs/concepts.md).

Plain ``Literal`` types: the values travel as JSON, metric labels and manifest fields
unchanged, and a type checker catches a misspelt one.
"""

from __future__ import annotations

from typing import Literal, get_args

AdapterKind = Literal["policy", "reward"]
"""What an adapter is for: a ``policy`` generates (causal LM), a ``reward`` scores (LoRA plus a
scalar score head)."""

Tier = Literal["slot", "host", "disk"]
"""Where a loaded adapter version sits in a server, fastest first: a LoRA ``slot`` on the
device (used in forward passes), ``host`` memory, or only the ``disk`` cache."""

ADAPTER_KINDS: tuple[AdapterKind, ...] = get_args(AdapterKind)
TIERS: tuple[Tier, ...] = get_args(Tier)
