"""Reward scoring, Prometheus metrics, and the health probes."""

from __future__ import annotations

import httpx
import pytest

from tests.http_errors import assert_error


def test_rewards_score_each_completion(client):
    body = {"model": "judge", "prompt": "How do I reset my password?",
            "completions": ["Click 'forgot password' on the login page.", "No."]}
    r = client.post("/v1/rewards", json=body)
    assert r.status_code == 200, r.text
    scores = [d["score"] for d in r.json()["data"]]
    assert len(scores) == 2 and scores[0] != scores[1]
    again = client.post("/v1/rewards", json={**body, "completions": body["completions"][::-1]}).json()
    # batch order does not matter (up to float rounding of the padded batch)
    assert [d["score"] for d in again["data"]] == pytest.approx(scores[::-1], rel=1e-5)


def test_rewards_refuse_policy_adapters_and_bad_input(client):
    assert_error(client.post("/v1/rewards", json={"model": "summarize", "prompt": "x", "completions": ["y"]}),
                 400, "invalid_request_error")
    assert_error(client.post("/v1/rewards", json={"model": "judge", "prompt": "x", "completions": []}),
                 400, "invalid_request_error", param="completions")
    assert_error(client.post("/v1/rewards", json={"model": "nope", "prompt": "x", "completions": ["y"]}),
                 404, "not_found_error")


def test_metrics_have_vllm_names_and_per_adapter_series(client):
    client.post("/v1/completions", json={"model": "support", "prompt": "hello", "max_tokens": 3})
    text = client.get("/metrics").text
    for name in ("vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_bucket", "vllm:num_requests_running",
                 "vllm:num_requests_waiting", "vllm:prompt_tokens_total", "vllm:generation_tokens_total"):
        assert name in text, name
    assert 'loraloop_adapter_requests_total{adapter="support",version="1"}' in text
    assert 'loraloop_adapter_request_latency_seconds_count{adapter="support"}' in text


def test_health_and_readiness(base_url):
    with httpx.Client(base_url=base_url) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"


def sample(client, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_adapter_residency_and_swaps_show_in_metrics(client, tmp_path, tiny_llama_dir):
    from tests.adapters import make_adapter, multipart

    for seed in (21, 22):
        client.post("/v1/adapters/metered/versions", files=multipart(make_adapter(tiny_llama_dir, tmp_path / str(seed), seed=seed)))
    client.put("/v1/adapters/metered/aliases/production", json={"version": 1})
    for _ in range(2):
        client.post("/v1/completions", json={"model": "metered", "prompt": "hi", "max_tokens": 1})
    assert sample(client, "loraloop_adapter_cache_misses_total", adapter="metered") == 1
    assert sample(client, "loraloop_adapter_cache_hits_total", adapter="metered", tier="slot") >= 1
    assert sample(client, "loraloop_adapter_load_seconds_count", adapter="metered") == 1
    client.put("/v1/adapters/metered/aliases/production", json={"version": 2})
    assert sample(client, "loraloop_adapter_swaps_total", adapter="metered", alias="production") == 1
    assert client.post("/v1/completions", json={"model": "metered", "prompt": "hi", "max_tokens": 1}).json()["model"] == "metered@2"
