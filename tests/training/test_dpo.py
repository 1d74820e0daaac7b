"""DPO raises the chosen-over-rejected log-probability margin, against the base as reference."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from tests.training.helpers import assert_adapter_changed, assert_base_unchanged, base_weights
from training import dpo
from training.batching import encode_pairs
from training.config import DPOConfig
from training.data import load_preferences
from training.dpo import dpo_loss
from training.policy import prepare_policy
from training.progress import Progress
from training.run import start_run
from training.shared_base import POLICY, load_shared_base


def test_dpo_loss_by_hand() -> None:
    # h = (-1 - -2) - (-3 - -3) = 1; beta 0.5 -> -log sigmoid(0.5)
    loss, h = dpo_loss(
        torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), 0.5
    )
    assert h.item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.5)), 1e-6)
    # label smoothing 0.1: 0.9 * -log sigmoid(0.5) + 0.1 * -log sigmoid(-0.5)
    smoothed, _ = dpo_loss(
        torch.tensor([-1.0]),
        torch.tensor([-3.0]),
        torch.tensor([-2.0]),
        torch.tensor([-3.0]),
        0.5,
        0.1,
    )
    expected = 0.9 * math.log1p(math.exp(-0.5)) + 0.1 * math.log1p(math.exp(0.5))
    assert smoothed.item() == pytest.approx(expected, 1e-6)


def test_rpo_alpha_adds_the_chosen_completions_per_token_nll() -> None:
    # two pairs; chosen log-probs -3 over 2 tokens and -9 over 4: NLL = 12 / 6 = 2 per token
    pairs = (torch.tensor([-3.0, -9.0]), torch.tensor([-5.0, -6.0]))
    refs = (torch.tensor([-4.0, -8.0]), torch.tensor([-5.0, -7.0]))
    tokens = torch.tensor([2, 4])
    plain, h = dpo_loss(*pairs, *refs, 0.1)

    off, _ = dpo_loss(*pairs, *refs, 0.1, rpo_alpha=0.0, chosen_tokens=tokens)
    rpo, rpo_h = dpo_loss(*pairs, *refs, 0.1, rpo_alpha=0.5, chosen_tokens=tokens)

    assert off.item() == plain.item()
    assert rpo.item() == pytest.approx(plain.item() + 0.5 * 2.0, 1e-6)
    assert torch.equal(rpo_h, h)  # the implicit reward (and its accuracy) is DPO's alone


def test_the_rpo_term_pulls_the_chosen_log_prob_up() -> None:
    chosen = torch.tensor([-3.0], requires_grad=True)
    rest = (torch.tensor([-5.0]), torch.tensor([-3.0]), torch.tensor([-5.0]))
    grads = []
    for alpha in (0.0, 1.0):
        chosen.grad = None
        loss, _ = dpo_loss(chosen, *rest, 0.1, rpo_alpha=alpha, chosen_tokens=torch.tensor([3]))
        loss.backward()
        grads.append(chosen.grad.item())

    # descent raises log p(chosen) by 1/3 more per unit step: the NLL's gradient is -1/tokens
    assert grads[1] == pytest.approx(grads[0] - 1 / 3, 1e-6)


def test_dpo_raises_the_held_out_margin_and_registers_a_policy(
    sft_settings, demo_files, reward_run
) -> None:
    config = DPOConfig(
        adapter="demo-dpo",
        data=str(demo_files["preferences"]),
        reward="demo-rm@production",
        train_steps=20,
        batch_size=16,
        learning_rate=1e-3,
        eval_fraction=0.2,
        target_sequence_length=8,
        max_eval_prompts=32,
        progress=False,
    )
    result = dpo.main(config, settings=sft_settings)
    assert result is not None
    m = result.metrics
    # The effect: log p(chosen) - log p(rejected) on 80 unseen pairs rises by more than one nat,
    # and DPO's implicit reward ranks most of those pairs the right way.
    assert m["margin_gain"] > 1.0, m
    assert m["preference_accuracy"] >= 0.8, m
    # the separately trained reward model agrees that the responses got better
    assert m["reward_after"] > m["reward_base"] + 1.0 and m["win_rate"] > 0.6, m
    assert result.manifest.kind == "policy" and result.manifest.lineage["algorithm"] == "dpo"
    assert result.manifest.lineage["reward_adapter"] == "demo-rm@1"


def test_dpo_changes_only_the_policy_lora(settings, demo_files, tmp_path) -> None:
    config = DPOConfig(
        adapter="tiny-dpo",
        data=str(demo_files["preferences"]),
        train_steps=2,
        batch_size=4,
        register=False,
        progress=False,
    )
    ctx = start_run(config, settings)
    shared = load_shared_base(settings)
    before = base_weights(shared)
    prepare_policy(ctx, shared, config)
    lora_before = shared.named_adapter_parameters(POLICY)
    pairs = encode_pairs(shared.tokenizer, load_preferences(config.data).pairs[:16], "", 64, 16)
    dpo.fit(ctx, shared, pairs, Progress(2, "t", enabled=False))
    assert_adapter_changed(lora_before, shared.named_adapter_parameters(POLICY))
    assert_base_unchanged(before, shared)
    # the saved policy is a plain causal-LM LoRA: no score head, no value head
    folder = shared.save_adapter(POLICY, tmp_path / "policy")
    assert not any(
        "score" in k or "value" in k for k in load_file(folder / "adapter_model.safetensors")
    )
