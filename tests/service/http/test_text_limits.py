"""One prompt limit and one reply limit wherever a text enters: every endpoint refuses a text
over them with a 400 naming the field, before any tokenizing, and the same text passes in each."""

from __future__ import annotations

import pytest

from core.text_limits import MAX_CANDIDATE_CHARS, MAX_PROMPT_CHARS
from tests.http_errors import assert_error

LONG_PROMPT = "p" * (MAX_PROMPT_CHARS + 1)
LONG_REPLY = "r" * (MAX_CANDIDATE_CHARS + 1)


@pytest.fixture(scope="module")
def queue_id(base_url) -> str:
    import httpx

    from tests.api_keys import ADMIN_KEY, auth

    with httpx.Client(base_url=base_url, headers=auth(ADMIN_KEY)) as admin:
        r = admin.post("/v1/labeling/queues", json={"use_case": "summarize"})
        assert r.status_code == 201, r.text
        return r.json()["id"]


CASES = {
    "completion prompt": ("/v1/completions", {"model": "base", "prompt": LONG_PROMPT}, "prompt"),
    "one of several prompts": (
        "/v1/completions", {"model": "base", "prompt": ["hi", LONG_PROMPT]}, "prompt"
    ),
    "chat messages together": ("/v1/chat/completions", {"model": "base", "messages": [
        {"role": "system", "content": "s" * MAX_PROMPT_CHARS}, {"role": "user", "content": "hi"},
    ]}, "messages"),
    "reward prompt": ("/v1/rewards", {"model": "judge", "prompt": LONG_PROMPT, "completions": ["a"]}, "prompt"),
    "reward completion": (
        "/v1/rewards", {"model": "judge", "prompt": "q", "completions": ["a", LONG_REPLY]}, "completions.1"
    ),
    "feedback prompt": ("/v1/feedback", {
        "use_case": "summarize", "prompt": LONG_PROMPT, "candidates": ["a", "b"], "choice": 0,
    }, "prompt"),
    "feedback candidate": ("/v1/feedback", {
        "use_case": "summarize", "prompt": "q", "candidates": ["a", LONG_REPLY], "choice": 0,
    }, "candidates[1]"),
    "job instruction": ("/v1/jobs", {
        "kind": "dpo", "use_case": "summarize", "params": {"instruction": LONG_PROMPT},
    }, "params.instruction"),
    "round instruction": ("/v1/jobs", {
        "kind": "round", "use_case": "summarize", "params": {"policy": {"instruction": LONG_PROMPT}},
    }, "params.policy.instruction"),
}


@pytest.mark.parametrize("path, body, param", CASES.values(), ids=CASES.keys())
def test_a_text_over_the_limit_is_400_naming_it(client, path, body, param) -> None:
    limit = MAX_CANDIDATE_CHARS if param.startswith(("completions", "candidates")) else MAX_PROMPT_CHARS
    r = client.post(path, json=body)
    assert_error(r, 400, "invalid_request_error", param, str(limit))


def test_labeling_prompts_to_generate_are_held_to_the_prompt_limit(client, queue_id) -> None:
    body = {"source": "generate", "a": "summarize", "prompts": ["hi", LONG_PROMPT]}
    r = client.post(f"/v1/labeling/queues/{queue_id}/pairs", json=body)
    assert_error(r, 400, "invalid_request_error", "prompts.1", str(MAX_PROMPT_CHARS))


def test_texts_at_the_limits_are_accepted_everywhere_they_can_be_stored(client) -> None:
    prompt, reply = "p" * MAX_PROMPT_CHARS, "r" * MAX_CANDIDATE_CHARS
    r = client.post("/v1/feedback", json={
        "use_case": "summarize", "prompt": prompt, "candidates": ["a", reply], "choice": 1,
    })
    assert r.status_code == 201, r.text
    # A prompt at the limit is no longer refused for its characters, only for its tokens.
    r = client.post("/v1/completions", json={"model": "base", "prompt": prompt})
    assert_error(r, 400, "invalid_request_error", "prompt", "max_prompt_tokens")
