"""log_format = "json" on a real `python -m service`: stderr holds one JSON object per line,
each with the id of the request it was written for (the X-Request-ID answered)."""

from __future__ import annotations

import json
import signal

import httpx

from tests.service_process import server_env, server_process


def test_every_line_is_json_and_names_its_request(tmp_path, tiny_llama_dir):
    env = server_env(
        tmp_path / "data", tiny_llama_dir, alias_poll_seconds=0, start_worker=False, log_format="json",
        request_timeout_seconds=1, max_new_tokens=4000,
    )
    with server_process(env, log_level="info") as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            models = client.get("/v1/models", headers={"X-Request-ID": "trace-models-1"})
            assert models.headers["x-request-id"] == "trace-models-1"
            replaced = client.get("/healthz", headers={"X-Request-ID": "not a safe id"}).headers["x-request-id"]
            # A generation longer than request_timeout_seconds: a 504, logged by the server.
            slow = client.post(
                "/v1/completions", headers={"X-Request-ID": "slow-1"},
                json={"model": "base", "prompt": "Hello", "max_tokens": 4000, "ignore_eos": True},
            )
            assert slow.status_code == 504
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        lines = server.log_lines()

    records = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    for record in records:
        assert {"time", "level", "logger", "message", "request_id"} <= set(record), record

    def of(request_id: str) -> list[dict]:
        return [r for r in records if r["request_id"] == request_id]

    assert any(r["logger"] == "uvicorn.access" and "GET /v1/models" in r["message"] for r in of("trace-models-1"))
    assert any(r["logger"] == "uvicorn.access" and "GET /healthz" in r["message"] for r in of(replaced))
    timed_out = [r for r in of("slow-1") if r["logger"] == "service.errors"]
    assert timed_out and timed_out[0]["level"] == "WARNING" and "TimedOut" in timed_out[0]["message"]
    # Outside any request (start-up, shutdown), request_id is null.
    assert any("shutting down" in r["message"] and r["request_id"] is None for r in records)
