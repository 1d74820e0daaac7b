"""The demo adapter: on the embedded tiny Llama with an empty registry, register ``demo`` so the
README's first request has an adapter to select.

It is a real PEFT LoRA folder (rank 8 on q/v, random weights from a fixed seed), written with
safetensors; on a real checkpoint nothing is registered (a random adapter would be noise).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.base.folders import TINY_LLAMA
from core.base.info import BaseModelInfo
from core.registry import Registry
from core.settings import Settings

log = logging.getLogger(__name__)

DEMO_ADAPTER = "demo"
_RANK, _ALPHA, _TARGETS, _SEED = 8, 16, ("q_proj", "v_proj"), 1234


def write_demo_adapter(folder: Path, base: BaseModelInfo) -> Path:
    generator = torch.Generator().manual_seed(_SEED)
    tensors = {}
    for layer in range(base.num_layers):
        for module in _TARGETS:
            in_features, out_features = base.projections[module]
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(_RANK, in_features, generator=generator) / in_features**0.5
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_features, _RANK, generator=generator)
    save_file(tensors, folder / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base.model_id,
        "r": _RANK, "lora_alpha": _ALPHA, "lora_dropout": 0.0, "target_modules": list(_TARGETS),
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "modules_to_save": None,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return folder


def ensure_demo_adapter(settings: Settings, registry: Registry) -> None:
    if not settings.demo_adapter or settings.base_model != TINY_LLAMA or registry.list_adapters():
        return
    with tempfile.TemporaryDirectory() as tmp:
        manifest = registry.publish(
            write_demo_adapter(Path(tmp), registry.base), DEMO_ADAPTER, created_by="loraloop-demo"
        )
    registry.set_alias(DEMO_ADAPTER, "production", manifest.version, expected=None)
    log.info("registered the demo adapter %s as demo@production", manifest.ref)
