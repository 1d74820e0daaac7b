"""The demo adapter: on an embedded base with an empty registry, register ``demo`` so the
README's first request has an adapter to select.

- ``smollm2-135m-instruct``: the committed ``service/assets/demo-adapter`` (rank 8 on the
  attention projections, trained by ``python -m training demo-adapter`` with our DPO to answer
  in ALL CAPS), registered with its metrics when the base's fingerprint is the one it was
  trained on.
- ``tiny-llama``: a real PEFT LoRA folder with random weights from a fixed seed (rank 8 on q/v);
  the base is random too, so there is nothing to teach it.

On any other checkpoint nothing is registered (neither would fit or mean anything).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.base.folders import SMOLLM2, TINY_LLAMA
from core.base.info import BaseModelInfo
from core.registry import Registry
from core.settings import Settings

log = logging.getLogger(__name__)

DEMO_ADAPTER = "demo"
# Written by ``python -m training demo-adapter service/assets/demo-adapter``.
TRAINED_DEMO = Path(__file__).parent / "assets" / "demo-adapter"
TRAINING_FILE = "training.json"  # the base fingerprint, metrics and config of the run
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


def trained_demo_adapter(base: BaseModelInfo) -> tuple[Path, dict] | None:
    """The committed demo adapter folder and its training record, if it was trained on a base
    of ``base``'s architecture (else None: its shapes would not fit)."""
    record = json.loads((TRAINED_DEMO / TRAINING_FILE).read_text())
    if record["base_fingerprint"] != base.fingerprint:
        log.warning(
            "not registering the demo adapter: it was trained on a base with fingerprint %s, "
            "the served base has %s", record["base_fingerprint"], base.fingerprint,
        )
        return None
    return TRAINED_DEMO, record


def ensure_demo_adapter(settings: Settings, registry: Registry) -> None:
    if not settings.demo_adapter or registry.list_adapters():
        return
    if settings.base_model == SMOLLM2:
        trained = trained_demo_adapter(registry.base)
        if trained is None:
            return
        folder, record = trained
        manifest = registry.publish(
            folder,
            DEMO_ADAPTER,
            metrics=record["metrics"],
            lineage={k: v for k, v in record.items() if k != "metrics"},
            created_by="loraloop-demo",
        )
    elif settings.base_model == TINY_LLAMA:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = registry.publish(
                write_demo_adapter(Path(tmp), registry.base), DEMO_ADAPTER, created_by="loraloop-demo"
            )
    else:
        return
    registry.set_alias(DEMO_ADAPTER, "production", manifest.version, expected=None)
    log.info("registered the demo adapter %s as demo@production", manifest.ref)
