"""Real PEFT adapters for tests, made with peft on a given base checkpoint, and the adapters
the test servers serve.

    make_adapter(base_dir, out, rank=8, target_modules=("q_proj",), seed=1)   a PEFT folder
    publish_test_adapters(settings, tmp)       summarize, support and judge, each @production
    multipart(folder)                          the folder as an upload's form files
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from core.base.folders import base_model_info
from core.registry import open_registry
from core.settings import Settings

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def make_adapter(
    base_dir: Path,
    out: Path,
    *,
    rank: int = 4,
    alpha: float = 8,
    target_modules: tuple[str, ...] | list[str] = ("q_proj", "v_proj"),
    kind: str = "policy",
    seed: int = 0,
    scale: float = 0.5,
) -> Path:
    """Save a LoRA for ``base_dir`` to ``out`` with random non-zero B ~ N(0, scale) (so it
    changes the base's outputs; a smaller ``scale`` keeps the logits peaked) and, for kind
    'reward', a random score head."""
    torch.manual_seed(seed)
    if kind == "reward":
        model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)
        config = LoraConfig(task_type="SEQ_CLS", r=rank, lora_alpha=alpha,
                            target_modules=list(target_modules))
    else:
        model = AutoModelForCausalLM.from_pretrained(base_dir)
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules))
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "score" in name:
                param.normal_(0, scale)
    peft_model.save_pretrained(out)
    return Path(out)


def publish_test_adapters(settings: Settings, tmp: Path) -> None:
    """Register ``summarize`` (rank 4), ``support`` (rank 8, every projection) and the reward
    adapter ``judge``, made in ``tmp``, each with alias production -> 1."""
    registry = open_registry(settings, base_model_info(settings))
    base = Path(settings.base_model)
    for name, rank, targets, seed in (
        ("summarize", 4, ("q_proj", "v_proj"), 1),
        ("support", 8, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), 2),
    ):
        manifest = registry.publish(make_adapter(base, tmp / name, rank=rank, target_modules=targets, seed=seed), name)
        registry.set_alias(name, "production", manifest.version)
    judge = registry.publish(make_adapter(base, tmp / "judge", kind="reward", seed=3), "judge", "reward")
    registry.set_alias("judge", "production", judge.version)


def multipart(folder: Path) -> list:
    """The adapter folder's files as the ``files`` fields of a multipart upload."""
    return [("files", (name, (folder / name).read_bytes())) for name in ADAPTER_FILES]
