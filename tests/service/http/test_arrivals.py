"""A request counts as on its way to the engine from the moment the server has read its
headers: an idle engine waits for it, so that a burst starts as one batch."""

from __future__ import annotations

import asyncio
import json

import httpx

from core.settings import Settings
from service.app import create_app
from tests.service.engine.engine_calls import rows_per_pass
from tests.service_thread import serve_app

BODY = {"prompt": "hello there", "max_tokens": 3, "temperature": 0, "ignore_eos": True}


def test_a_request_whose_body_is_still_coming_holds_an_idle_engine(settings: Settings):
    app = create_app(settings)
    with serve_app(app) as url:
        passes = rows_per_pass(app.state.services.engine)

        async def slow_body():
            # headers now, the body 150 ms later: 30 burst gaps, well under the longest wait
            await asyncio.sleep(0.15)
            yield json.dumps({"model": "base", **BODY}).encode()

        async def main():
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                slow = asyncio.create_task(client.post(
                    "/v1/completions", content=slow_body(), headers={"Content-Type": "application/json"}
                ))
                await asyncio.sleep(0.03)  # the slow request's headers are in
                fast = await client.post("/v1/completions", json={"model": "base", **BODY})
                return [fast, await slow]

        responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    # one prefill of both (their first tokens), then 2 decode steps of both
    assert passes == [2, 2, 2], passes


def test_a_refused_request_stops_counting(settings: Settings):
    # A request refused before its handler runs (here: its body is not JSON) stops counting,
    # and so does a queued one: neither holds the engine's next burst.
    app = create_app(settings)
    with serve_app(app) as url:
        passes = rows_per_pass(app.state.services.engine)
        with httpx.Client(base_url=url, timeout=30) as client:
            refused = client.post("/v1/completions", content=b"{", headers={"Content-Type": "application/json"})
            served = client.post("/v1/completions", json={"model": "base", **BODY})
        engine = app.state.services.engine
        on_the_way = engine.scheduler.on_the_way
    assert refused.status_code == 400, refused.text
    assert served.status_code == 200, served.text
    assert passes == [1, 1, 1], passes
    assert on_the_way == 0


def test_a_queued_request_stops_counting_while_it_streams(settings: Settings):
    app = create_app(settings)
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        scheduler = app.state.services.engine.scheduler
        body = {"model": "base", **BODY, "max_tokens": 50, "stream": True}
        with client.stream("POST", "/v1/completions", json=body) as response:
            assert next(line for line in response.iter_lines() if line.startswith("data: "))
            on_the_way = scheduler.on_the_way
    assert on_the_way == 0
