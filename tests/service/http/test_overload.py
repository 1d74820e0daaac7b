"""Overload answers 429 with Retry-After, never a hang or a 5xx: a bounded load test with 64
concurrent clients over 16 adapters against a server with a small queue (loopback only)."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import httpx
import pytest

from core.base.folders import base_model_info
from core.registry import open_registry
from core.settings import Settings
from tests.adapters import make_adapter
from tests.service_thread import serve

CLIENTS, ADAPTERS, REQUESTS_PER_CLIENT = 64, 16, 3
DEADLINE_SECONDS = 120


@pytest.fixture(scope="module")
def small_server(tmp_path_factory, tiny_llama_dir):
    data = tmp_path_factory.mktemp("overload")
    settings = Settings(
        data_dir=data / "data", base_model=str(tiny_llama_dir), base_model_id="tiny-llama",
        device="cpu", dtype="float32", alias_poll_seconds=0, max_batch_size=8, max_queue=8,
        start_worker=False,
    )
    registry = open_registry(settings, base_model_info(settings))
    for i in range(ADAPTERS):
        folder = make_adapter(Path(tiny_llama_dir), data / f"a{i}", rank=4 + 4 * (i % 2), seed=i)
        manifest = registry.publish(folder, f"use-case-{i}")
        registry.set_alias(f"use-case-{i}", "production", manifest.version)
    with serve(settings) as url:
        yield url


async def _client(http: httpx.AsyncClient, index: int, statuses: collections.Counter, retry_after: list) -> None:
    for n in range(REQUESTS_PER_CLIENT):
        body = {"model": f"use-case-{(index + n) % ADAPTERS}", "prompt": f"request {index} {n}",
                "max_tokens": 16, "temperature": 0, "ignore_eos": True}
        response = await http.post("/v1/completions", json=body)
        statuses[response.status_code] += 1
        if response.status_code == 429:
            retry_after.append(response.headers.get("retry-after"))
            assert response.json()["error"]["type"] == "rate_limit_error"
        elif response.status_code == 200:
            assert response.json()["model"] == f"{body['model']}@1"
            assert response.json()["usage"]["completion_tokens"] == 16


def test_64_clients_over_16_adapters_get_200_or_429_and_no_5xx(small_server):
    statuses: collections.Counter = collections.Counter()
    retry_after: list = []

    async def run() -> None:
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=small_server, timeout=60, limits=limits) as http:
            await asyncio.gather(*(_client(http, i, statuses, retry_after) for i in range(CLIENTS)))

    started = time.monotonic()
    asyncio.run(asyncio.wait_for(run(), DEADLINE_SECONDS))
    elapsed = time.monotonic() - started
    assert sum(statuses.values()) == CLIENTS * REQUESTS_PER_CLIENT
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] >= 16 and statuses[429] >= 1, statuses  # served, and overload was refused
    assert retry_after and all(v is not None and int(v) >= 1 for v in retry_after)
    assert elapsed < DEADLINE_SECONDS
