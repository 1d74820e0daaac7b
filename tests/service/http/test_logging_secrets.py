"""What the server logs: never an API key, and no prompt or reply text at INFO or above unless
``log_prompts`` says so."""

from __future__ import annotations

import logging

import httpx
from fastapi.testclient import TestClient

from core.settings import Settings
from service.app import create_app
from tests.api_keys import ADMIN_KEY, API_KEYS, FEEDBACK_KEY, INFER_KEY, auth
from tests.http_errors import assert_error

PROMPT = "Tell me about the zebra-lighthouse-4711"
REPLY = "A reply about the zebra-lighthouse-4711"
SECRETS = [ADMIN_KEY, INFER_KEY, FEEDBACK_KEY]


def logged(caplog, level: int = logging.INFO) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= level)


def exercise(client: httpx.Client | TestClient) -> None:
    """A request of each kind that carries a prompt or a reply, and failures around keys."""
    completion = {"model": "summarize", "prompt": PROMPT, "max_tokens": 4}
    assert client.post("/v1/completions", json=completion, headers=auth(INFER_KEY)).status_code == 200
    chat = {"model": "base", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}
    assert client.post("/v1/chat/completions", json=chat, headers=auth(INFER_KEY)).status_code == 200
    reward = {"model": "judge", "prompt": PROMPT, "completions": [REPLY]}
    assert client.post("/v1/rewards", json=reward, headers=auth(ADMIN_KEY)).status_code == 200
    feedback = {"use_case": "summarize", "prompt": PROMPT, "candidates": [REPLY, "no"], "choice": 0}
    assert client.post("/v1/feedback", json=feedback, headers=auth(FEEDBACK_KEY)).status_code == 201
    # Invalid requests echo nothing into the log either.
    bad = {"model": "summarize", "prompt": PROMPT, "temperature": 9}
    assert client.post("/v1/completions", json=bad, headers=auth(INFER_KEY)).status_code == 400
    assert client.post("/v1/jobs", json={}, headers=auth(INFER_KEY)).status_code == 403


def test_no_key_prompt_or_reply_is_logged_by_default(base_url, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with httpx.Client(base_url=base_url, timeout=60) as client:
        exercise(client)
    text = logged(caplog)
    assert "loaded adapter judge@1" in text  # the server's own records are captured here
    assert "zebra-lighthouse" not in text
    for secret in SECRETS:
        assert secret not in logged(caplog, logging.DEBUG)


def test_a_wrong_key_of_the_right_length_is_refused_like_any_other(base_url) -> None:
    # Keys are compared in constant time (hmac.compare_digest over every key, no early exit):
    # a guess sharing a real key's length and prefix learns nothing more than a 401.
    near = ADMIN_KEY[:-1] + ("x" if ADMIN_KEY[-1] != "x" else "y")
    with httpx.Client(base_url=base_url, timeout=60) as client:
        r = client.get("/v1/models", headers=auth(near))
        assert_error(r, 401, "authentication_error", None, "invalid API key")
        assert near not in r.text


def test_log_prompts_logs_each_completion_at_info(tmp_path, tiny_llama_dir, caplog) -> None:
    settings = Settings(
        data_dir=tmp_path, base_model=str(tiny_llama_dir), device="cpu", dtype="float32",
        start_worker=False, demo_adapter=False, api_keys=API_KEYS, log_prompts=True,
    )
    caplog.set_level(logging.INFO)
    with TestClient(create_app(settings)) as client:
        body = {"model": "base", "prompt": PROMPT, "max_tokens": 2}
        assert client.post("/v1/completions", json=body, headers=auth(INFER_KEY)).status_code == 200
    assert f"prompt '{PROMPT}'" in logged(caplog)
    for secret in SECRETS:
        assert secret not in logged(caplog, logging.DEBUG)
