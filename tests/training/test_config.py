"""Run configs from YAML/TOML files and flags, with errors that say how to fix them."""

from __future__ import annotations

import argparse

import pytest
import yaml

from core.config_file import read_config_file
from training.config import (
    DPOConfig,
    PPOConfig,
    RewardConfig,
    add_config_arguments,
    config_from_args,
    load_config,
)


def parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


def test_yaml_file_then_flags_win(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "adapter: summarize\nprompts: p.jsonl\nreward: summarize-rm@production\n"
        "kl_coeff: 0.2\nlora_rank: 4\ntarget_modules: [q_proj, v_proj]\n"
        "gates:\n  min_reward_gain: 0.5\n  max_kl: 8\n"
    )
    config = parse(
        PPOConfig,
        [
            "--config",
            str(path),
            "--kl-coeff",
            "0.05",
            "--gate",
            "min_win_rate=0.6",
            "--no-register",
            "--adaptive-kl",
        ],
    )
    assert (
        config.kl_coeff == 0.05
        and config.lora_rank == 4
        and config.adaptive_kl
        and not config.register
    )
    assert config.target_modules == ["q_proj", "v_proj"]
    assert config.gates.active() == {"min_reward_gain": 0.5, "max_kl": 8.0, "min_win_rate": 0.6}


def test_toml_file(tmp_path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'adapter = "qa-rm"\ndata = "prefs.jsonl"\ntrain_steps = 10\nmargin = 1\n'
        "[gates]\nmin_reward_accuracy = 0.9\n"
    )
    config = load_config(RewardConfig, path)
    assert config.train_steps == 10 and config.margin == 1.0 and config.kind == "reward"
    assert config.gates.min_reward_accuracy == 0.9


def test_flags_alone_and_defaults() -> None:
    config = parse(
        DPOConfig, ["--adapter", "qa", "--data", "d.jsonl", "--target-modules", "q_proj,o_proj"]
    )
    assert (
        config.target_modules == ["q_proj", "o_proj"]
        and config.beta == 0.1
        and config.parent_ref == "qa@production"
    )


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (RewardConfig, {"data": "d"}, "adapter: required .*--adapter"),
        (RewardConfig, {"adapter": "Bad Name", "data": "d"}, "invalid adapter name"),
        (
            RewardConfig,
            {"adapter": "a", "data": "d", "learning_rate": -1},
            "learning_rate: must be > 0.*--learning-rate",
        ),
        (
            RewardConfig,
            {"adapter": "a", "data": "d", "target_modules": ["lm_head"]},
            "target_modules: use some of q_proj",
        ),
        (PPOConfig, {"adapter": "a", "prompts": "p"}, "PPO needs a reward adapter"),
        (
            PPOConfig,
            {"adapter": "a", "prompts": "p", "reward": "r", "batch_size": 6, "num_minibatches": 4},
            "num_minibatches: must divide batch_size",
        ),
        (
            PPOConfig,
            {"adapter": "a", "prompts": "p", "reward": "r", "kl_estimator": "k9"},
            "use one of k1, k2, k3",
        ),
        (DPOConfig, {"adapter": "a", "data": "d", "beta": 0}, "beta: must be > 0"),
        (DPOConfig, {"adapter": "a", "data": "d", "rpo_alpha": -1}, "rpo_alpha: must be >= 0"),
        (DPOConfig, {"adapter": "a", "data": "d", "lora_rank": "8"}, "lora_rank: expected int"),
        (
            RewardConfig,
            {"adapter": "a", "data": "d", "gates": {"min_reward_accuracy": 2}},
            "fraction",
        ),
        (RewardConfig, {"adapter": "a", "data": "d", "gates": {"max_loss": 1}}, "unknown gate"),
        (
            RewardConfig,
            {"adapter": "a", "data": "d", "learnin_rate": 1},
            "unknown setting.*learnin_rate",
        ),
    ],
)
def test_invalid_values_say_how_to_fix_them(cls, values, message, tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ValueError, match=message):
        load_config(cls, path)


def test_malformed_gate_flag() -> None:
    with pytest.raises(ValueError, match="NAME=NUMBER"):
        parse(RewardConfig, ["--adapter", "a", "--data", "d", "--gate", "max_kl"])


@pytest.mark.parametrize("name, text", [("run.ini", "x = 1\n"), ("run.yaml", "a: [1\n")])
def test_a_config_file_is_read_as_the_settings_file_is(tmp_path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as direct:
        read_config_file(path)
    with pytest.raises(ValueError) as training:
        load_config(RewardConfig, path)
    assert str(training.value) == str(direct.value)
