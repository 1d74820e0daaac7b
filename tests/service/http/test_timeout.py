"""A generation past request_timeout_seconds ends with a 504 (or an error event mid-stream),
and its batch row is freed."""

from __future__ import annotations

import json

import httpx
import pytest

from core.settings import Settings
from tests.service.http.conftest import serve
from tests.service.http.test_disconnect import running
from tests.service.http.test_errors import assert_error

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
