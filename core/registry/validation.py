"""Checks that a PEFT adapter folder fits the served base, before it is published or loaded.

A LoRA on projection W (out x in) stores A [r, in] and B [out, r]; the engine computes
W x + (alpha / r) * B A x. So an adapter fits the base when every A/B pair names a Llama
projection the base has, in a layer it has, with matching in/out features, and r is within the
engine's limit. A reward adapter adds a score head [1, hidden]. Only safetensors are read, and
only their header here: no tensor is loaded and nothing is unpickled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from core.adapters import AdapterKind
from core.base.info import BaseModelInfo
from core.errors import InvalidAdapter
from core.registry.manifest import ADAPTER_FILES as ADAPTER_FILES  # re-exported
from core.registry.manifest import CONFIG_FILE, WEIGHTS_FILE

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# peft writes about a kilobyte; a larger file is not a config, and is not read into memory.
MAX_CONFIG_BYTES = 1 << 20

# base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight (causal LM and seq-cls alike)
_LORA_KEY = re.compile(
    r"base_model\.model\.(?:model\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight"
)
SCORE_KEY = "base_model.model.score.weight"
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


def parse_lora_key(key: str) -> tuple[int, str, str] | None:
    """(layer, module, "A" or "B") of a LoRA tensor name, None for any other tensor."""
    match = _LORA_KEY.fullmatch(key)
    return (int(match[1]), match[2], match[3]) if match else None


@dataclass(frozen=True)
class AdapterSummary:
    rank: int
    alpha: float
    target_modules: list[str]
    use_rslora: bool = False

    @property
    def scaling(self) -> float:
        """peft's factor on B A x: alpha / r, or alpha / sqrt(r) under rsLoRA."""
        return self.alpha / (self.rank**0.5 if self.use_rslora else self.rank)


def _refuse(folder: Path, reason: str) -> InvalidAdapter:
    return InvalidAdapter(f"adapter folder {folder.name!r}: {reason}")


def read_adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise _refuse(folder, f"no {CONFIG_FILE}; save it with peft's save_pretrained")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise _refuse(folder, f"{CONFIG_FILE} is over {MAX_CONFIG_BYTES} bytes; peft writes ~1 KB")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _refuse(folder, f"{CONFIG_FILE} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise _refuse(folder, f"{CONFIG_FILE} must hold a JSON object")
    return config


def _check_config(folder: Path, config: dict[str, Any]) -> tuple[int, float]:
    if config.get("peft_type") != "LORA":
        raise _refuse(folder, f"peft_type is {config.get('peft_type')!r}; only LORA is served")
    for field, what in _UNSUPPORTED.items():
        if config.get(field):
            raise _refuse(folder, f"{what} is not supported; retrain without {field}")
    if config.get("bias", "none") != "none":
        raise _refuse(folder, "bias training is not supported; use bias='none'")
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, (int, float)):
        raise _refuse(folder, f"{CONFIG_FILE} needs an integer r >= 1 and a numeric lora_alpha")
    return rank, float(alpha)


def _tensor_shapes(folder: Path) -> dict[str, list[int]]:
    weights = folder / WEIGHTS_FILE
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise _refuse(
            folder,
            f"{', '.join(pickles)} would need unpickling, which loraloop never does; "
            f"save with safe_serialization=True and keep only {WEIGHTS_FILE}",
        )
    if not weights.is_file():
        raise _refuse(folder, f"no {WEIGHTS_FILE}")
    try:
        with safe_open(weights, framework="pt") as f:
            return {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise _refuse(folder, f"{WEIGHTS_FILE} is not a readable safetensors file ({e})") from None


def validate_adapter_folder(
    folder: Path,
    kind: AdapterKind,
    base: BaseModelInfo,
    max_rank: int,
    served_modules: frozenset[str] | set[str] | None = None,
) -> AdapterSummary:
    """Raise InvalidAdapter saying what is wrong unless ``folder`` can be served on ``base``
    (and, when given, only targets ``served_modules``, the projections the engine wraps)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidAdapter(f"adapter folder {str(folder)!r} does not exist")
    config = read_adapter_config(folder)
    rank, alpha = _check_config(folder, config)
    shapes = _tensor_shapes(folder)

    modules: set[str] = set()
    pairs: dict[tuple[int, str], dict[str, list[int]]] = {}
    for key, shape in shapes.items():
        if key == SCORE_KEY:
            continue
        parsed = parse_lora_key(key)
        if parsed is None:
            raise _refuse(folder, f"tensor {key!r} is not a LoRA weight of a Llama projection")
        layer, module, which = parsed
        if module not in base.projections:
            raise _refuse(folder, f"target module {module!r} is not one of {sorted(base.projections)}")
        if served_modules is not None and module not in served_modules:
            raise _refuse(
                folder, f"target module {module!r} is not served "
                f"(lora_target_modules: {sorted(served_modules)})"
            )
        if layer >= base.num_layers:
            raise _refuse(
                folder, f"layer {layer} does not exist in base {base.model_id!r} "
                f"({base.num_layers} layers): the adapter was made for another base model"
            )
        modules.add(module)
        pairs.setdefault((layer, module), {})[which] = shape

    if not pairs:
        raise _refuse(folder, "no LoRA weights found")
    for (layer, module), pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise _refuse(folder, f"layer {layer} {module} lacks its lora_A or lora_B weight")
        in_features, out_features = base.projections[module]
        if pair["A"] != [rank, in_features] or pair["B"] != [out_features, rank]:
            raise _refuse(
                folder,
                f"layer {layer} {module}: lora_A {pair['A']} / lora_B {pair['B']} do not fit "
                f"base {base.model_id!r} (expected [{rank}, {in_features}] / "
                f"[{out_features}, {rank}]): the adapter was made for another base model",
            )
    if rank > max_rank:
        raise _refuse(folder, f"rank {rank} exceeds max_lora_rank {max_rank}")

    score = shapes.get(SCORE_KEY)
    if kind == "reward" and score != [1, base.hidden_size]:
        raise _refuse(
            folder,
            f"a reward adapter needs a score head {SCORE_KEY} of shape [1, {base.hidden_size}] "
            f"(LoraConfig(task_type='SEQ_CLS') on a 1-label sequence classifier); found {score}",
        )
    if kind == "policy" and score is not None:
        raise _refuse(folder, "it has a score head: register it with kind 'reward'")
    return AdapterSummary(
        rank=rank, alpha=alpha, target_modules=sorted(modules), use_rslora=bool(config.get("use_rslora"))
    )
