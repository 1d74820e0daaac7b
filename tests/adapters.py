"""Real PEFT adapters for tests, made with peft on a given base checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification


def make_adapter(
    base_dir: Path,
    out: Path,
    *,
    rank: int = 4,
    alpha: float = 8,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
    kind: str = "policy",
    seed: int = 0,
) -> Path:
    """Save a LoRA for ``base_dir`` to ``out`` with random non-zero A and B (so it changes
    the base's outputs) and, for kind 'reward', a random score head."""
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
                param.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return Path(out)
