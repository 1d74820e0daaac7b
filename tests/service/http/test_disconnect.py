"""A client that goes away frees its batch row: streaming and non-streaming alike."""

from __future__ import annotations

import httpx

from tests.api_keys import ADMIN_KEY, auth
from tests.service.http.metrics import running

# About ten seconds of generation on the tiny model: far longer than the cancellation may take.
LONG = {"model": "summarize", "prompt": "Tell me a story", "max_tokens": 4000, "temperature": 0, "ignore_eos": True}


def test_closing_a_stream_cancels_its_generation(client, base_url, wait_for):
    with httpx.Client(base_url=base_url, headers=auth(ADMIN_KEY), timeout=30) as streamer:
        with streamer.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as response:
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            wait_for(lambda: running(client) == 1, 2)
        # leaving the block closes the connection mid-stream
    wait_for(lambda: running(client) == 0, 2)


def test_a_non_streaming_client_that_times_out_is_cancelled(client, base_url, wait_for):
    with httpx.Client(base_url=base_url, headers=auth(ADMIN_KEY), timeout=0.5) as impatient:
        try:
            impatient.post("/v1/completions", json=LONG)
            raise AssertionError("the generation should have outlasted the client's timeout")
        except httpx.ReadTimeout:
            pass
    # the whole generation takes several seconds; the cancelled one is gone within two
    wait_for(lambda: running(client) == 0, 2)
    # the server is still healthy and serves the next request
    assert client.post("/v1/completions", json={**LONG, "max_tokens": 4}).status_code == 200
