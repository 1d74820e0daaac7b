"""Retries against real HTTP servers that fail on purpose: backoff that honours Retry-After,
one Idempotency-Key across the attempts of a call, dropped connections, no resend of a publish
the server may have seen, and typed errors once the retries are spent."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from loraloop_client import (
    APIConnectionError,
    BadRequestError,
    Client,
    RateLimitError,
    ServiceUnavailableError,
)

from tests.api_keys import FEEDBACK_KEY
from tests.clients.fault_server import DROP, Received, Reply, fault_server, scripted
from tests.ports import free_port

FEEDBACK = {"id": 1, "use_case": "demo", "prompt": "P", "candidates": ["a", "b"], "completion_ids": [None, None],
            "choice": 0, "labeler": "x", "source": "human", "metadata": {}, "created_at": "2026-12-01T00:00:00Z"}
BUSY = Reply(503, {"error": {"message": "busy", "type": "api_error"}}, {"Retry-After": "0.3"})
ADAPTERS = Reply(200, {"object": "list", "data": []})


def test_a_503_is_retried_after_retry_after_with_one_idempotency_key():
    with fault_server(scripted({("POST", "/v1/feedback"): [BUSY, BUSY, Reply(201, FEEDBACK)]})) as (url, server):
        with Client(url, "k", max_retries=2) as client:
            posted = client.feedback.post("demo", 0, prompt="P", candidates=["a", "b"])
    attempts = server.requests_to("POST", "/v1/feedback")
    assert posted.id == 1 and len(attempts) == 3
    keys = {a.headers["Idempotency-Key"] for a in attempts}
    assert len(keys) == 1 and keys.pop().startswith("loraloop-")
    # Retry-After asked for 0.3 s between attempts: never sooner.
    assert all(b.at - a.at >= 0.3 for a, b in zip(attempts, attempts[1:], strict=False))


def test_each_logical_post_gets_its_own_idempotency_key():
    with fault_server(scripted({("POST", "/v1/feedback"): [Reply(201, FEEDBACK)]})) as (url, server):
        with Client(url, "k") as client:
            client.feedback.post("demo", 0, prompt="P", candidates=["a", "b"])
            client.feedback.post("demo", 0, prompt="P", candidates=["a", "b"])
    assert len({a.headers["Idempotency-Key"] for a in server.requests_to("POST", "/v1/feedback")}) == 2


def test_a_dropped_connection_is_retried():
    with fault_server(scripted({("GET", "/v1/adapters"): [DROP, ADAPTERS]})) as (url, server):
        with Client(url, "k", max_retries=1) as client:
            assert client.adapters.list() == []
    assert len(server.requests_to("GET", "/v1/adapters")) == 2


def test_retries_are_bounded_and_end_in_the_typed_error():
    full = Reply(429, {"error": {"message": "queue full", "type": "rate_limit_error", "code": "overloaded"}},
                 {"Retry-After": "0.05"})
    with fault_server(scripted({("GET", "/v1/adapters"): [full]})) as (url, server):
        with Client(url, "k", max_retries=2) as client, pytest.raises(RateLimitError) as error:
            client.adapters.list()
        with Client(url, "k", max_retries=0) as client, pytest.raises(RateLimitError):
            client.adapters.list()
    assert len(server.requests_to("GET", "/v1/adapters")) == 3 + 1
    assert (error.value.status_code, error.value.message, error.value.code) == (429, "queue full", "overloaded")


def test_a_bad_request_is_not_retried():
    bad = Reply(400, {"error": {"message": "prompt: too short", "type": "invalid_request_error", "param": "prompt"}})
    with fault_server(scripted({("POST", "/v1/rewards"): [bad]})) as (url, server):
        with Client(url, "k") as client, pytest.raises(BadRequestError) as error:
            client.rewards.score("judge", "x", ["y"])
    assert len(server.received) == 1 and error.value.param == "prompt"


def test_a_publish_the_server_may_have_seen_is_not_resent(tmp_path: Path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"0" * 64)
    with fault_server(scripted({("POST", "/v1/adapters/demo/versions"): [DROP, BUSY]})) as (url, server):
        with Client(url, "k", max_retries=2) as client:
            with pytest.raises(APIConnectionError):
                client.adapters.publish("demo", tmp_path)
            with pytest.raises(ServiceUnavailableError):
                client.adapters.publish("demo", tmp_path)
    assert len(server.received) == 2


def test_an_unreachable_server_is_a_connection_error():
    with Client(f"http://127.0.0.1:{free_port()}", "k", max_retries=1) as client:
        with pytest.raises(APIConnectionError):
            client.adapters.list()


def test_a_feedback_post_whose_answer_was_lost_counts_once(base_url):
    """A proxy forwards the first post to the real server, then drops the answer: the
    client's retry carries the same Idempotency-Key and the server returns the first record."""
    posts: list[int] = []

    def forward(request: Received) -> Reply | str:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        answer = httpx.request(request.method, base_url + request.path, headers=headers,
                               content=request.body, timeout=60)
        if request.method == "POST":
            posts.append(answer.status_code)
            if len(posts) == 1:
                return DROP
        return Reply(answer.status_code, answer.json())

    with fault_server(forward) as (url, _), Client(url, FEEDBACK_KEY, max_retries=2) as client:
        posted = client.feedback.post("sdk-lost-answer", 0, prompt="P", candidates=["a", "b"])
        stats = client.feedback.stats("sdk-lost-answer")
    assert posts == [201, 201] or posts == [201, 200]
    assert stats.use_cases[0].feedback == 1 and posted.use_case == "sdk-lost-answer"
