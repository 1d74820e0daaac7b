"""`python -m training ...` as a person types it: flags, config files, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from training.__main__ import build_parser, main


@pytest.fixture
def env(monkeypatch, settings):
    """The CLI reads Settings from LORALOOP_* like any deployment."""
    monkeypatch.setenv("LORALOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("LORALOOP_BASE_MODEL", settings.base_model)
    monkeypatch.setenv("LORALOOP_BASE_MODEL_ID", "tiny-llama")
    monkeypatch.setenv("LORALOOP_DEVICE", "cpu")
    return settings


def test_help_lists_every_command_and_knob() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "training", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("reward", "ppo", "dpo", "feedback", "register", "registry", "demo-data"):
        assert command in out
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    ppo_help = commands.choices["ppo"].format_help()
    for flag in (
        "--kl-coeff",
        "--instruction",
        "--prompt-sequence-length",
        "--target-sequence-length",
        "--lora-rank",
        "--gate",
        "--config",
        "--promote",
    ):
        assert flag in ppo_help


def test_a_round_from_the_command_line(env, tmp_path, capsys) -> None:
    assert main(["demo-data", str(tmp_path / "demo"), "--pairs", "60", "--prompts", "20"]) == 0
    config = tmp_path / "rm.yaml"
    config.write_text("train_steps: 4\nbatch_size: 4\ngates:\n  min_reward_accuracy: 0.0\n")
    assert (
        main(
            [
                "reward",
                "--config",
                str(config),
                "--adapter",
                "qa-rm",
                "--data",
                str(tmp_path / "demo" / "preferences_vertex.jsonl"),
                "--promote",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith("qa-rm@1")
    assert (
        main(
            [
                "ppo",
                "--adapter",
                "qa",
                "--reward",
                "qa-rm@production",
                "--prompts",
                str(tmp_path / "demo" / "prompts.jsonl"),
                "--train-steps",
                "1",
                "--batch-size",
                "4",
                "--target-sequence-length",
                "4",
                "--max-eval-prompts",
                "2",
                "--instruction",
                "Answer in a few words.",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith("qa@1")
    assert (
        main(
            [
                "dpo",
                "--adapter",
                "qa",
                "--data",
                str(tmp_path / "demo" / "preferences.jsonl"),
                "--train-steps",
                "1",
                "--batch-size",
                "2",
                "--max-eval-prompts",
                "2",
                "--target-sequence-length",
                "8",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith("qa@2")
    assert main(["registry", "list"]) == 0
    listing = capsys.readouterr().out
    assert "qa-rm" in listing and "production=1" in listing


def test_bad_settings_exit_2_with_a_fix(env, tmp_path, capsys) -> None:
    assert main(["reward", "--adapter", "qa-rm", "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "not a file" in capsys.readouterr().err
    assert main(["ppo", "--adapter", "qa", "--prompts", "p.jsonl"]) == 2
    assert "needs a reward adapter" in capsys.readouterr().err


def test_unknown_reward_adapter_exits_1(env, tmp_path, capsys) -> None:
    main(["demo-data", str(tmp_path / "demo"), "--pairs", "10", "--prompts", "10"])
    assert (
        main(
            [
                "ppo",
                "--adapter",
                "qa",
                "--reward",
                "nope@production",
                "--prompts",
                str(tmp_path / "demo" / "prompts.jsonl"),
            ]
        )
        == 1
    )
    assert "nope" in capsys.readouterr().err
