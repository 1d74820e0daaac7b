"""Read a PEFT LoRA folder into host tensors the LoRA slots can copy from.

Only ``adapter_model.safetensors`` is read (never a pickle). Every tensor is checked against the
served base before anything reaches a slot:

    base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_A.weight   A [r, in]
    base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_B.weight   B [out, r]
    base_model.model.score.weight                                              [1, hidden] (reward)

and the layer computes ``W x + scaling * B (A x)`` with ``scaling = alpha / r`` (``alpha / sqrt(r)``
under rsLoRA), exactly as peft does.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from core.base_model import BaseModelInfo
from core.errors import InvalidAdapter

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
SCORE_KEY = "base_model.model.score.weight"
_LORA_KEY = re.compile(
    r"base_model\.model\.(?:model\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight"
)
# peft features that change the forward pass beyond W x + s B A x: refused, not silently ignored.
_UNSUPPORTED = {
    "use_dora": "DoRA",
    "rank_pattern": "per-module ranks (rank_pattern)",
    "alpha_pattern": "per-module alphas (alpha_pattern)",
    "lora_bias": "LoRA bias terms",
    "layer_replication": "layer replication",
    "trainable_token_indices": "trainable tokens",
    "use_qalora": "QA-LoRA",
}

AdapterKind = Literal["policy", "reward"]


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


def _refuse(what: str, reason: str) -> InvalidAdapter:
    return InvalidAdapter(f"adapter {what}: {reason}")


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
    """Load and validate ``folder``; raise InvalidAdapter saying what does not fit.

    ``modules`` are the projections the engine wraps (settings.lora_target_modules).
    """
    folder = Path(folder)
    what = name or folder.name
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise _refuse(what, f"needs {CONFIG_FILE} and {WEIGHTS_FILE} (peft save_pretrained)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _refuse(what, f"{CONFIG_FILE} is not valid JSON ({e})") from None
    if config.get("peft_type") != "LORA":
        raise _refuse(what, f"peft_type {config.get('peft_type')!r} is not LORA")
    for key, feature in _UNSUPPORTED.items():
        if config.get(key):
            raise _refuse(what, f"{feature} is not supported by the engine")
    if config.get("bias", "none") != "none":
        raise _refuse(what, "bias training is not supported; use bias='none'")
    alpha = config.get("lora_alpha")
    if not isinstance(alpha, (int, float)):
        raise _refuse(what, "lora_alpha must be a number")
    rslora = bool(config.get("use_rslora"))

    try:
        tensors = load_file(weights_path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:  # a corrupt or truncated file
        raise _refuse(what, f"{WEIGHTS_FILE} is not readable safetensors ({e})") from None

    halves: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    score = tensors.pop(SCORE_KEY, None)
    for key, tensor in tensors.items():
        match = _LORA_KEY.fullmatch(key)
        if not match:
            raise _refuse(what, f"tensor {key!r} is not a LoRA weight of a Llama projection")
        layer, module, half = int(match[1]), match[2], match[3]
        if module not in modules:
            raise _refuse(
                what,
                f"target module {module!r} is not served (lora_target_modules: {sorted(modules)})",
            )
        if layer >= base.num_layers:
            raise _refuse(what, f"layer {layer} does not exist in base {base.model_id!r}")
        halves.setdefault((layer, module), {})[half] = tensor
    if not halves:
        raise _refuse(what, "holds no LoRA weights")

    pairs: dict[tuple[int, str], LoraPair] = {}
    ranks = set()
    for (layer, module), half in sorted(halves.items()):
        if set(half) != {"A", "B"}:
            raise _refuse(what, f"layer {layer} {module} lacks lora_A or lora_B")
        A, B = half["A"], half["B"]
        in_features, out_features = base.projections[module]
        r = A.shape[0]
        if A.shape != (r, in_features) or B.shape != (out_features, r):
            raise _refuse(
                what,
                f"layer {layer} {module}: A {list(A.shape)} / B {list(B.shape)} do not fit "
                f"base {base.model_id!r} ([r, {in_features}] / [{out_features}, r])",
            )
        if r > max_rank:
            raise _refuse(what, f"rank {r} exceeds max_lora_rank {max_rank}")
        ranks.add(r)
        scaling = alpha / math.sqrt(r) if rslora else alpha / r
        pairs[(layer, module)] = LoraPair(
            A.to(dtype).contiguous(), B.to(dtype).contiguous(), scaling
        )

    if kind == "reward":
        if score is None or tuple(score.shape) != (1, base.hidden_size):
            raise _refuse(
                what, f"a reward adapter needs a score head {SCORE_KEY} [1, {base.hidden_size}]"
            )
        score = score.to(dtype)
    elif score is not None:
        raise _refuse(what, "has a score head: it is a reward adapter, not a policy")
    return AdapterWeights(
        kind=kind,
        rank=max(ranks),
        pairs=pairs,
        score=score,
        modules=frozenset(module for _, module in pairs),
    )
