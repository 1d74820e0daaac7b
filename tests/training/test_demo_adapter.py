"""`python -m training demo-adapter DIR`: the ALL CAPS preference data, made by the base itself,
and a DPO run on it. On the tiny Llama for speed (2 steps); the committed adapter trained on
SmolLM2 is tested through the server (tests/service/http/test_demo_adapter.py)."""

from __future__ import annotations

import json

import pytest

from core.base.folders import base_model_info
from core.registry.validation import validate_adapter_folder
from training.__main__ import main
from training.data import load_preferences
from training.demo_adapter import make_questions


@pytest.fixture
def env(monkeypatch, settings):
    monkeypatch.setenv("LORALOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("LORALOOP_DEVICE", "cpu")
    return settings


def build(folder, settings) -> int:
    return main(
        ["demo-adapter", str(folder), "--base-model", settings.base_model, "--prompts", "12",
         "--steps", "2"]
    )


def test_the_questions_are_distinct_and_the_same_for_a_seed():
    questions = make_questions(200, seed=0)

    assert len(set(questions)) == 200
    assert make_questions(200, seed=0) == questions
    assert make_questions(200, seed=1) != questions


def test_the_command_writes_trl_pairs_dpo_reads_and_a_servable_adapter(env, tmp_path):
    assert build(tmp_path / "demo", env) == 0

    data = load_preferences(str(tmp_path / "demo" / "preferences.jsonl"), env)
    assert data.format == "trl" and 0 < len(data.pairs) <= 12
    for pair in data.pairs:
        assert pair.chosen == pair.rejected.upper() != pair.rejected
        assert pair.prompt.endswith("[/INST]")  # rendered through the base's chat template
    record = json.loads((tmp_path / "demo" / "training.json").read_text())
    info = base_model_info(env)
    assert record["base_fingerprint"] == info.fingerprint
    assert record["config"]["train_steps"] == 2 and record["data"]["rows"] == len(data.pairs)
    summary = validate_adapter_folder(tmp_path / "demo", "policy", info, max_rank=64)
    assert summary.rank == 8


def test_the_generated_data_is_the_same_on_every_run(env, tmp_path):
    assert build(tmp_path / "one", env) == 0
    assert build(tmp_path / "two", env) == 0

    first, second = ((tmp_path / d / "preferences.jsonl").read_bytes() for d in ("one", "two"))
    assert first == second


def test_a_retrain_reads_the_existing_preferences_instead_of_generating_them(env, tmp_path):
    assert build(tmp_path / "demo", env) == 0
    data = tmp_path / "demo" / "preferences.jsonl"
    kept = "".join(data.read_text().splitlines(keepends=True)[:5])
    data.write_text(kept)

    assert build(tmp_path / "demo", env) == 0

    assert data.read_text() == kept
    record = json.loads((tmp_path / "demo" / "training.json").read_text())
    assert record["data"]["rows"] == 5 and "generate" not in record["seconds"]
