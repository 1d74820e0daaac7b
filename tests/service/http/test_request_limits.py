"""Request values at the edges: each is served sensibly or refused with a 400 naming the
field, never a 500 or a hang. Several were found by fuzzing the API (schemathesis)."""

from __future__ import annotations

import pytest

from core.settings import Settings
from tests.adapters import publish_test_adapters
from tests.api_keys import API_KEYS
from tests.http_errors import assert_error

MAX_NEW_TOKENS = 24


@pytest.fixture(scope="module")
def server_settings(tmp_path_factory, tiny_llama_dir) -> Settings:
    data = tmp_path_factory.mktemp("limits")
    settings = Settings(
        data_dir=data / "data", base_model=str(tiny_llama_dir), base_model_id="tiny-llama",
        device="cpu", dtype="float32", alias_poll_seconds=0, max_new_tokens=MAX_NEW_TOKENS,
        request_timeout_seconds=20, api_keys=API_KEYS,  # a hang before the fixes ends as a 504
    )
    publish_test_adapters(settings, data)
    return settings


def _text(client, **fields) -> str:
    body = {"model": "summarize", "prompt": "Once upon a time", "max_tokens": 8, "ignore_eos": True}
    response = client.post("/v1/completions", json=body | fields)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def test_unsampleable_values_valid_by_the_schema_are_served_as_greedy(client):
    greedy = _text(client, temperature=0)
    assert _text(client, temperature=2.2250738585072014e-308) == greedy  # below 1e-5: greedy
    assert _text(client, top_p=5e-324, seed=1) == greedy  # the nucleus is the top token
    assert _text(client, top_k=2**63, temperature=0) == greedy  # top_k beyond the vocabulary: off
    _text(client, top_k=2**63, seed=1)


def test_a_seed_beyond_64_bits_is_400_naming_seed(client):
    body = {"model": "base", "prompt": "x", "seed": 2**64 + 1}
    assert_error(client.post("/v1/completions", json=body), 400, "invalid_request_error", param="seed")


def test_a_non_ascii_digit_version_is_400_naming_the_field(client):
    body = {"model": "summarize@²", "prompt": "x"}
    assert_error(client.post("/v1/completions", json=body), 400, "invalid_request_error", param="model")
    r = client.get("/v1/feedback/stats", params={"a": "summarize@²", "b": "base"})
    assert_error(r, 400, "invalid_request_error", param="a")
    assert_error(client.post("/v1/adapters/summarize@²/load"), 400, "invalid_request_error")


def test_chat_without_max_tokens_answers_up_to_max_new_tokens(client):
    body = {"model": "summarize", "messages": [{"role": "user", "content": "Hi"}], "ignore_eos": True}
    reply = client.post("/v1/chat/completions", json=body).json()
    assert reply["usage"]["completion_tokens"] == MAX_NEW_TOKENS
    assert reply["choices"][0]["finish_reason"] == "length"
