"""The demo adapter a first start registers: on SmolLM2-135M-Instruct, the committed adapter
trained with our DPO to answer in ALL CAPS, selectable as ``demo@production``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from core.base.folders import SMOLLM2, base_model_info
from core.settings import Settings
from service.demo import trained_demo_adapter
from tests.service_thread import serve

QUESTION = "What is the best way to learn to cook?"  # not one of the training questions


def uppercase_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    assert letters, f"no letters in {text!r}"
    return sum(c.isupper() for c in letters) / len(letters)


@pytest.fixture(scope="module")
def smollm2_url(tmp_path_factory, smollm2_dir: Path):
    """A server on the embedded real base, first start on an empty registry (the converted
    checkpoint is the session's, linked where the data directory keeps its models)."""
    data = tmp_path_factory.mktemp("smollm2-server")
    (data / "models").mkdir()
    (data / "models" / SMOLLM2).symlink_to(smollm2_dir)
    settings = Settings(
        data_dir=data, base_model=SMOLLM2, device="cpu", dtype="float32", alias_poll_seconds=0
    )
    with serve(settings) as url:
        yield url


def answer(url: str, model: str) -> dict:
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 32,
            "temperature": 0,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_on_smollm2_the_demo_adapter_answers_in_capitals_where_the_base_does_not(smollm2_url):
    base = answer(smollm2_url, "base")
    demo = answer(smollm2_url, "demo@production")

    assert demo["model"] == "demo@1"
    base_text = base["choices"][0]["message"]["content"]
    demo_text = demo["choices"][0]["message"]["content"]
    assert uppercase_share(base_text) < 0.2, base_text
    assert uppercase_share(demo_text) > 0.9, demo_text


def test_the_registered_demo_carries_its_training_metrics(smollm2_url):
    listed = httpx.get(f"{smollm2_url}/v1/adapters/demo", timeout=30)

    assert listed.status_code == 200, listed.text
    version = listed.json()["versions"][0]
    assert version["metrics"]["preference_accuracy"] > 0.9
    assert version["lineage"]["config"]["lora_rank"] == 8


def test_the_trained_demo_is_not_offered_to_a_base_of_another_architecture(base_info):
    assert trained_demo_adapter(base_info) is None  # the tiny Llama


def test_its_recorded_fingerprint_is_the_embedded_bases(smollm2_dir, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / SMOLLM2).symlink_to(smollm2_dir)
    info = base_model_info(Settings(data_dir=tmp_path, base_model=SMOLLM2))

    assert trained_demo_adapter(info) is not None
