"""A bounded loopback load test on a server process: waves of concurrent clients mixing four
adapters and the base, streamed and whole completions and chats, feedback posts and reward
calls, against a small engine queue. Every answer is a success or a 429 with Retry-After (never
a 5xx, never a hang), overload is reached, and the server's resident memory stays flat from
wave to wave once the first has warmed it up (the figures are printed)."""

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
from tests.ports import free_port
from tests.service_process import rss_bytes, server_env, server_process

WAVES, CLIENTS, CALLS_PER_CLIENT = 4, 16, 4
ADAPTERS = ("alpha", "beta", "gamma", "delta")
WAVE_DEADLINE_SECONDS = 300  # only a hang waits this long
# Growth of resident memory allowed after the warm-up wave (which loads the adapters and grows
# the KV cache): allocator noise, far below what keeping each call's state would cost.
MAX_GROWTH_BYTES = 24 << 20
MIB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path):
    data = tmp_path_factory.mktemp("load") / "data"
    settings = dict(base_model_id="tiny-llama", alias_poll_seconds=0, start_worker=False,
                    max_batch_size=4, max_queue=4)
    registry_settings = Settings(data_dir=data, base_model=str(tiny_llama_dir), device="cpu", **settings)
    registry = open_registry(registry_settings, base_model_info(registry_settings))
    for seed, name in enumerate(ADAPTERS):
        folder = make_adapter(tiny_llama_dir, data.parent / name, rank=2 + 2 * (seed % 2), seed=seed)
        registry.set_alias(name, "production", registry.publish(folder, name).version)
    judge = make_adapter(tiny_llama_dir, data.parent / "judge", kind="reward", seed=9)
    registry.set_alias("judge", "production", registry.publish(judge, "judge", "reward").version)
    port = free_port()
    with server_process(server_env(data, tiny_llama_dir, **settings), port) as server:
        yield server.url, server.process.pid


class Tally:
    def __init__(self) -> None:
        self.statuses: collections.Counter[tuple[str, int]] = collections.Counter()
        self.problems: list[str] = []

    def check(self, kind: str, r: httpx.Response, ok: int = 200) -> bool:
        """Count the answer; True if it is ``ok``. A 429 must say when to retry."""
        self.statuses[kind, r.status_code] += 1
        if r.status_code == 429:
            if int(r.headers.get("retry-after", "0")) < 1 or r.json()["error"]["type"] != "rate_limit_error":
                self.problems.append(f"{kind}: 429 without Retry-After: {r.headers} {r.text}")
        elif r.status_code != ok:
            self.problems.append(f"{kind}: {r.status_code} {r.text[:300]}")
        return r.status_code == ok


async def call(http: httpx.AsyncClient, tally: Tally, client: int, n: int) -> None:
    """One call of a mix that cycles through every kind and adapter."""
    model = (*ADAPTERS, "base")[(client + n) % (len(ADAPTERS) + 1)]
    kind = ("completion", "stream", "chat-stream", "feedback", "reward")[(client * 3 + n) % 5]
    prompt = f"client {client} call {n}"
    sampling = {"max_tokens": 8, "temperature": 0.7, "seed": client}
    if kind == "completion":
        r = await http.post("/v1/completions", json={"model": model, "prompt": prompt, **sampling})
        if tally.check(kind, r):
            assert r.json()["usage"]["completion_tokens"] >= 1
    elif kind in ("stream", "chat-stream"):
        if kind == "stream":
            body = {"model": model, "prompt": prompt, "stream": True, **sampling}
            path = "/v1/completions"
        else:
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
                    **sampling}
            path = "/v1/chat/completions"
        r = await http.post(path, json=body)
        if tally.check(kind, r) and not r.text.rstrip().endswith("data: [DONE]"):
            tally.problems.append(f"{kind}: a stream ended without [DONE]: {r.text[-300:]}")
    elif kind == "feedback":
        body = {"use_case": model, "prompt": prompt, "candidates": ["one", "two"], "choice": n % 2}
        tally.check(kind, await http.post("/v1/feedback", json=body), ok=201)
    else:
        body = {"model": "judge", "prompt": prompt, "completions": ["yes", "no"]}
        tally.check(kind, await http.post("/v1/rewards", json=body))


async def wave(url: str, tally: Tally) -> None:
    async def client(http: httpx.AsyncClient, index: int) -> None:
        for n in range(CALLS_PER_CLIENT):
            await call(http, tally, index, n)

    # A connection per call: a pooled connection idle past uvicorn's keep-alive (5 s, easily
    # reached on a busy CI machine) can be closed just as the next call is sent on it, a race
    # of HTTP/1.1 clients that is no fault of the server.
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        async with asyncio.timeout(WAVE_DEADLINE_SECONDS):
            await asyncio.gather(*(client(http, i) for i in range(CLIENTS)))


def test_waves_of_mixed_traffic_get_no_5xx_429_under_overload_and_flat_memory(server, capsys):
    url, pid = server
    tally = Tally()
    rss, seconds = [], []
    for _ in range(WAVES):
        started = time.monotonic()
        asyncio.run(wave(url, tally))
        seconds.append(time.monotonic() - started)
        rss.append(rss_bytes(pid))
    with capsys.disabled():
        print(f"\nload: {WAVES} waves x {CLIENTS} clients x {CALLS_PER_CLIENT} calls in "
              f"{', '.join(f'{s:.1f}' for s in seconds)} s; server RSS after each wave (MiB): "
              f"{', '.join(f'{b / MIB:.1f}' for b in rss)}; growth after warm-up "
              f"{(max(rss[1:]) - rss[1]) / MIB:+.1f} MiB; answers {dict(sorted(tally.statuses.items()))}")
    assert not tally.problems, tally.problems[:5]
    assert sum(tally.statuses.values()) == WAVES * CLIENTS * CALLS_PER_CLIENT
    refused = sum(count for (_, status), count in tally.statuses.items() if status == 429)
    assert refused >= 1, "the queue never filled: the test did not overload the server"
    for kind in ("completion", "stream", "chat-stream", "reward"):
        assert tally.statuses[kind, 200] >= 1, f"no {kind} ever served"
    assert max(rss[1:]) - rss[1] <= MAX_GROWTH_BYTES, [b // MIB for b in rss]
