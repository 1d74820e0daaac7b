"""A request past request_timeout_seconds ends with a 504 (or an error event mid-stream), and
its batch row is freed; the time limit counts from the start, adapter loading included."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from core.registry import Registry
from core.settings import Settings
from tests.adapters import publish_test_adapters
from tests.http_errors import assert_error
from tests.service.http.metrics import running
from tests.service_thread import serve

LONG = {"model": "base", "prompt": "Tell me a story", "max_tokens": 4000, "ignore_eos": True}


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory, tiny_llama_dir):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("timeout") / "data", base_model=str(tiny_llama_dir),
        device="cpu", dtype="float32", alias_poll_seconds=0, max_new_tokens=4000,
        request_timeout_seconds=0.5, start_worker=False,
    )
    with serve(settings) as url:
        yield url


def test_a_long_generation_times_out_with_504(impatient_server, wait_for):
    with httpx.Client(base_url=impatient_server, timeout=30) as c:
        assert_error(c.post("/v1/completions", json=LONG), 504, "timeout_error", contains="0.5 s")
        wait_for(lambda: running(c) == 0, 2)


def test_a_long_stream_ends_with_an_error_event_then_done(impatient_server, wait_for):
    with httpx.Client(base_url=impatient_server, timeout=30) as c:
        lines = [l for l in c.post("/v1/completions", json={**LONG, "stream": True}).text.splitlines() if l]
        assert lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2].removeprefix("data: "))["error"]["type"] == "timeout_error"
        wait_for(lambda: running(c) == 0, 2)


@pytest.fixture
def slow_registry_server(tmp_path, tiny_llama_dir, monkeypatch):
    """A server whose registry downloads hang until the test ends (or 10 s pass)."""
    settings = Settings(
        data_dir=tmp_path / "data", base_model=str(tiny_llama_dir), device="cpu", dtype="float32",
        alias_poll_seconds=0, request_timeout_seconds=0.5,
    )
    publish_test_adapters(settings, tmp_path)
    released = threading.Event()
    fetch = Registry.fetch

    def slow_fetch(self, adapter: str, version: int, manifest=None):
        released.wait(10)
        return fetch(self, adapter, version, manifest)

    monkeypatch.setattr(Registry, "fetch", slow_fetch)
    with serve(settings) as url:
        try:
            yield url
        finally:
            released.set()


def test_a_slow_adapter_load_counts_against_the_request_timeout(slow_registry_server):
    body = {"model": "summarize", "prompt": "Hello", "max_tokens": 2}
    with httpx.Client(base_url=slow_registry_server, timeout=30) as c:
        assert_error(c.post("/v1/completions", json=body), 504, "timeout_error", contains="0.5 s")
        # A stream is accepted before its adapter loads (the load happens at admission, as in
        # vLLM), so the timeout arrives as the stream's error event.
        chat = {"model": "summarize", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        response = c.post("/v1/chat/completions", json=chat)
        events = [json.loads(line[6:]) for line in response.text.splitlines()
                  if line.startswith("data: {")]
        assert response.status_code == 200 and events, response.text
        assert events[-1]["error"]["type"] == "timeout_error"
        assert "0.5 s" in events[-1]["error"]["message"]
