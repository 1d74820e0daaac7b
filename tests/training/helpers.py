"""Checks shared by the learning tests."""

from __future__ import annotations

import torch

from training.shared_base import SharedBase


def base_weights(shared: SharedBase) -> dict[str, torch.Tensor]:
    """The frozen base's tensors under their original names (peft's wrappers stripped)."""
    out = {}
    for name, value in shared.model.state_dict().items():
        if "lora_" in name or "modules_to_save" in name:
            continue
        out[name.replace(".base_layer", "").replace(".original_module", "")] = (
            value.detach().clone()
        )
    return out


def assert_base_unchanged(before: dict[str, torch.Tensor], shared: SharedBase) -> None:
    after = base_weights(shared)
    assert after.keys() == before.keys()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert not changed, f"base weights changed: {changed}"
    assert not any(
        p.requires_grad
        for n, p in shared.model.named_parameters()
        if "lora_" not in n and "modules_to_save" not in n
    )


def assert_adapter_changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    """Every LoRA B (zero at init) and score head moved."""
    moved = [k for k in after if ("lora_B" in k or "score" in k)]
    assert moved, "no LoRA weights found"
    assert all(not torch.equal(before[k], after[k]) for k in moved)
