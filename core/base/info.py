"""What adapters are checked against: the served base's id, fingerprint and projection shapes.

Read from a checkpoint's ``config.json`` with the standard library alone, so the registry and
its CLI never import torch or transformers. Missing fields are derived as transformers'
``LlamaConfig`` derives them (``head_dim``, ``num_key_value_heads``), so the fingerprint of a
Llama 2 folder (whose config.json has neither) is the same whichever way it is read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The projections of a Llama decoder layer that a LoRA may target, attention then MLP.
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

_FINGERPRINT_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
)


def architecture(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The fingerprinted fields of a config (a config.json mapping or a transformers config),
    with the defaults LlamaConfig applies filled in."""
    if not isinstance(config, Mapping):
        config = {name: getattr(config, name, None) for name in _FINGERPRINT_FIELDS}
    fields = {name: config.get(name) for name in _FINGERPRINT_FIELDS}
    if fields["num_key_value_heads"] is None:
        fields["num_key_value_heads"] = fields["num_attention_heads"]
    if fields["head_dim"] is None and fields["hidden_size"] and fields["num_attention_heads"]:
        fields["head_dim"] = fields["hidden_size"] // fields["num_attention_heads"]
    return fields


def config_fingerprint(config: Mapping[str, Any] | Any) -> str:
    """sha256 of the architecture fields an adapter depends on (shapes and layer count)."""
    return hashlib.sha256(json.dumps(architecture(config), sort_keys=True).encode()).hexdigest()


def projection_shapes(config: Mapping[str, Any] | Any) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection a LoRA may target."""
    arch = architecture(config)
    hidden, head_dim = arch["hidden_size"], arch["head_dim"]
    q_out = arch["num_attention_heads"] * head_dim
    kv_out = arch["num_key_value_heads"] * head_dim
    return {
        "q_proj": (hidden, q_out),
        "k_proj": (hidden, kv_out),
        "v_proj": (hidden, kv_out),
        "o_proj": (q_out, hidden),
        "gate_proj": (hidden, arch["intermediate_size"]),
        "up_proj": (hidden, arch["intermediate_size"]),
        "down_proj": (arch["intermediate_size"], hidden),
    }


@dataclass(frozen=True)
class BaseModelInfo:
    """The served base as adapters see it."""

    model_id: str
    fingerprint: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    projections: dict[str, tuple[int, int]]

    @classmethod
    def from_config(cls, model_id: str, config: Mapping[str, Any] | Any) -> BaseModelInfo:
        arch = architecture(config)
        return cls(
            model_id=model_id,
            fingerprint=config_fingerprint(arch),
            num_layers=arch["num_hidden_layers"],
            hidden_size=arch["hidden_size"],
            vocab_size=arch["vocab_size"],
            projections=projection_shapes(arch),
        )

    @classmethod
    def from_folder(cls, model_id: str, folder: Path) -> BaseModelInfo:
        """From a checkpoint folder's config.json (no weights are read)."""
        return cls.from_config(model_id, json.loads((folder / "config.json").read_text()))
