"""The reward model learns the synthetic rule, saves in the serving format, and registers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaForSequenceClassification

from core.base.checkpoint import load_tokenizer
from core.base.folders import base_model_info
from core.hashing import sha256_file
from core.registry import open_registry
from core.reward_format import reward_input_ids
from tests.training.helpers import assert_adapter_changed, assert_base_unchanged, base_weights
from training import reward
from training.batching import encode_reward_pairs, pad
from training.config import RewardConfig
from training.data import load_preferences
from training.progress import Progress
from training.reward import bradley_terry_loss
from training.run import lora_spec, start_run
from training.shared_base import REWARD, load_shared_base, lora_config


def test_bradley_terry_loss_by_hand() -> None:
    # r_c - r_r = 0 -> -log(1/2) = ln 2; with margin 1 and difference 1 -> ln 2 too
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0])).item() == pytest.approx(
        0.693147, 1e-5
    )
    assert bradley_terry_loss(
        torch.tensor([2.0]), torch.tensor([1.0]), 1.0
    ).item() == pytest.approx(0.693147, 1e-5)
    # difference 2: -log sigmoid(2) = log(1 + e^-2)
    assert bradley_terry_loss(torch.tensor([3.0]), torch.tensor([1.0])).item() == pytest.approx(
        0.126928, 1e-5
    )


def test_reward_model_reaches_90_percent_held_out_accuracy(reward_run) -> None:
    metrics = reward_run.metrics
    assert metrics["reward_accuracy"] >= 0.9, metrics
    assert metrics["eval_pairs"] == 80  # 20% of 400 pairs never trained on
    losses = [r["loss"] for r in reward_run.history if r["phase"] == "train"]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10  # the loss curve falls


def test_reward_version_is_registered_with_metrics_lineage_and_aliases(
    reward_run, sft_settings, demo_files
) -> None:
    registry = open_registry(sft_settings, base_model_info(sft_settings))
    manifest = registry.resolve("demo-rm@production")
    assert manifest.version == reward_run.version and manifest.kind == "reward"
    assert registry.aliases("demo-rm")["candidate"] == manifest.version
    assert manifest.metrics["reward_accuracy"] == reward_run.metrics["reward_accuracy"]
    lineage = manifest.lineage
    assert lineage["data"]["preferences"]["sha256"] == sha256_file(demo_files["preferences"])
    assert lineage["base_fingerprint"] == base_model_info(sft_settings).fingerprint
    assert lineage["config"]["train_steps"] == 150 and lineage["algorithm"] == "reward"
    assert "code_revision" in lineage
    assert reward_run.promotion.production and reward_run.promotion.gates_passed


def test_metrics_series_is_written_for_the_job_system(reward_run) -> None:
    path = Path(reward_run.lineage["config"]["metrics_file"])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    train = [r for r in records if r["phase"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 151))
    assert {"loss", "accuracy", "time"} <= train[0].keys()
    assert any(r["phase"] == "eval" for r in records) and records[-1]["phase"] == "final"


def test_saved_reward_adapter_scores_the_same_under_plain_peft(reward_run, sft_settings) -> None:
    """The serving format: LlamaForSequenceClassification(num_labels=1) + peft, nothing of ours."""
    registry = open_registry(sft_settings, base_model_info(sft_settings))
    folder = registry.fetch("demo-rm", reward_run.version)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert load_file(folder / "adapter_model.safetensors")[
        "base_model.model.score.weight"
    ].shape == (1, 64)

    tokenizer = load_tokenizer(sft_settings)
    texts = [
        ("Write about the sea:", " thank you for the warm music"),
        ("Write about tea:", " old cup"),
    ]
    seqs = [reward_input_ids(tokenizer, p, c) for p, c in texts]

    shared = load_shared_base(sft_settings, tokenizer)
    shared.load_adapter(REWARD, folder)
    ids, mask = pad(seqs, tokenizer.pad_token_id, side="left")
    with torch.no_grad(), shared.adapter(REWARD):
        ours = shared.scores(ids, mask)

    plain = LlamaForSequenceClassification.from_pretrained(sft_settings.base_model, num_labels=1)
    plain = PeftModel.from_pretrained(plain, folder).eval()
    with torch.no_grad():
        theirs = torch.cat([plain(input_ids=torch.tensor([s])).logits[:, 0] for s in seqs])
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_training_changes_lora_weights_and_no_base_weight(settings, demo_files) -> None:
    config = RewardConfig(
        adapter="tiny-rm",
        data=str(demo_files["preferences"]),
        train_steps=3,
        batch_size=4,
        register=False,
        progress=False,
    )
    shared = load_shared_base(settings)
    base_before = base_weights(shared)
    shared.add_adapter(REWARD, lora_config("reward", lora_spec(config)))
    lora_before = shared.named_adapter_parameters(REWARD)
    ctx = start_run(config, settings)
    pairs = encode_reward_pairs(shared.tokenizer, load_preferences(config.data).pairs[:40], "", 80)
    reward.fit(ctx, shared, pairs[:32], pairs[32:], Progress(3, "t", enabled=False))
    assert_adapter_changed(lora_before, shared.named_adapter_parameters(REWARD))
    assert_base_unchanged(base_before, shared)


def test_same_seed_gives_the_same_reward_adapter(settings, demo_files, tmp_path) -> None:
    def run(seed: int, out: str) -> dict[str, torch.Tensor]:
        config = RewardConfig(
            adapter="seeded-rm",
            data=str(demo_files["preferences"]),
            train_steps=4,
            batch_size=4,
            register=False,
            output_dir=str(tmp_path / out),
            seed=seed,
            progress=False,
        )
        reward.main(config, settings=settings)
        return load_file(tmp_path / out / "adapter_model.safetensors")

    first, again, other = run(7, "a"), run(7, "b"), run(8, "c")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
