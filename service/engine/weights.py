"""Read a PEFT LoRA folder into host tensors the LoRA slots can copy from.

The folder is first checked by ``core.registry.validation`` -- the same checks as at
registration: safetensors only (never a pickle), every tensor a LoRA pair of a served Llama
projection whose shapes fit the base, rank within the limit, a score head exactly for reward
adapters -- then its tensors are read:

    base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_A.weight   A [r, in]
    base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_B.weight   B [out, r]
    base_model.model.score.weight                                              [1, hidden] (reward)

and the layer computes ``W x + scaling * B (A x)`` with ``scaling = alpha / r`` (``alpha / sqrt(r)``
under rsLoRA), exactly as peft does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from core.adapters import AdapterKind
from core.base.info import BaseModelInfo
from core.errors import InvalidAdapter
from core.registry.manifest import WEIGHTS_FILE
from core.registry.validation import (
    SCORE_KEY,
    parse_lora_key,
    validate_adapter_folder,
)


@dataclass
class LoraPair:
    """One projection's update: A [r, in], B [out, r], and the peft scaling factor."""

    A: torch.Tensor
    B: torch.Tensor
    scaling: float

    @property
    def rank(self) -> int:
        return self.A.shape[0]


@dataclass
class AdapterWeights:
    """An adapter in host memory, validated against the base; what a slot is filled from."""

    kind: AdapterKind
    rank: int
    pairs: dict[tuple[int, str], LoraPair]  # (layer index, module name) -> pair
    score: torch.Tensor | None = None  # reward head [1, hidden]
    modules: frozenset[str] = field(default_factory=frozenset)

    @property
    def nbytes(self) -> int:
        total = sum(p.A.nbytes + p.B.nbytes for p in self.pairs.values())
        return total + (self.score.nbytes if self.score is not None else 0)


def read_adapter(
    folder: Path,
    base: BaseModelInfo,
    *,
    kind: AdapterKind,
    max_rank: int,
    modules: frozenset[str] | set[str],
    dtype: torch.dtype,
    name: str | None = None,
) -> AdapterWeights:
    """Validate and load ``folder``; InvalidAdapter (naming ``name``) says what does not fit.

    ``modules`` are the projections the engine wraps (settings.lora_target_modules).
    """
    try:
        summary = validate_adapter_folder(Path(folder), kind, base, max_rank, served_modules=modules)
    except InvalidAdapter as e:
        raise InvalidAdapter(f"{name}: {e}" if name else str(e)) from None
    tensors = load_file(Path(folder) / WEIGHTS_FILE, device="cpu")
    score = tensors.pop(SCORE_KEY, None)
    halves: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        parsed = parse_lora_key(key)
        assert parsed is not None  # validated above
        layer, module, half = parsed
        halves.setdefault((layer, module), {})[half] = tensor.to(dtype).contiguous()
    pairs = {
        position: LoraPair(half["A"], half["B"], summary.scaling) for position, half in sorted(halves.items())
    }
    return AdapterWeights(
        kind=kind,
        rank=summary.rank,
        pairs=pairs,
        score=score.to(dtype) if score is not None else None,
        modules=frozenset(summary.target_modules),
    )
