"""The S3 registry paused (SIGSTOP: connections hang) or stopped while a server serves from it:
adapters the server already has (in a slot, host memory or only the disk cache) keep serving,
completions, streams and rewards alike; an adapter it has never loaded answers 503 with a
message naming the registry, within the S3 timeouts; once S3 is back the same server serves
it, without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.base.folders import base_model_info
from core.registry import open_registry
from core.settings import Settings
from tests.adapters import make_adapter, publish_test_adapters
from tests.s3_servers import SeaweedFSServer, start_seaweedfs
from tests.service_thread import serve

# An uncached adapter must be refused within the S3 timeouts below, not hang.
S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT = 1.0, 2.0
REFUSAL_SECONDS = 15.0


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFSServer]:
    """A SeaweedFS of this module's own: the tests pause, stop and restart it."""
    server = start_seaweedfs(tmp_path_factory.mktemp("weed-faults"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_settings(weed: SeaweedFSServer, tmp_path_factory, tiny_llama_dir) -> Settings:
    data = tmp_path_factory.mktemp("s3-faults")
    settings = Settings(
        data_dir=data / "data", base_model=str(tiny_llama_dir), base_model_id="tiny-llama",
        device="cpu", dtype="float32", start_worker=False,
        registry_url=f"s3://{weed.create_bucket()}/registry", s3_endpoint_url=weed.endpoint_url,
        s3_region=weed.region, s3_access_key_id=weed.access_key,
        s3_secret_access_key=weed.secret_key, s3_connect_timeout=S3_CONNECT_TIMEOUT,
        s3_read_timeout=S3_READ_TIMEOUT, s3_max_attempts=1,
        # Two slots and two host copies for three adapters: one ends up in the disk cache only.
        max_active_adapters=2, max_host_adapters=2,
        alias_poll_seconds=0.5,  # the alias follower keeps polling the broken registry
    )
    publish_test_adapters(settings, data)  # summarize, support, judge (reward)
    registry = open_registry(settings, base_model_info(settings))
    for i, name in enumerate(("fresh-a", "fresh-b")):  # never served before the outage
        folder = make_adapter(Path(tiny_llama_dir), data / name, seed=10 + i)
        registry.set_alias(name, "production", registry.publish(folder, name).version)
    return settings


@pytest.fixture(scope="module")
def http(s3_settings: Settings) -> Iterator[httpx.Client]:
    with serve(s3_settings) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def complete(http: httpx.Client, model: str, stream: bool = False) -> httpx.Response:
    body = {"model": model, "prompt": "Hello", "max_tokens": 4, "temperature": 0, "stream": stream}
    return http.post("/v1/completions", json=body)


def served(http: httpx.Client, model: str) -> None:
    """``model`` answers a completion, a stream that ends with [DONE] (or, for the reward
    adapter, a score)."""
    if model == "judge":
        r = http.post("/v1/rewards", json={"model": model, "prompt": "Hi", "completions": ["a", "b"]})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == 2
        return
    r = complete(http, model)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == f"{model}@1"
    r = complete(http, model, stream=True)
    assert r.status_code == 200, r.text
    assert r.text.rstrip().endswith("data: [DONE]") and '"error"' not in r.text, r.text


def refused(http: httpx.Client, model: str) -> str:
    """``model`` answers 503 with Retry-After, fast, naming the registry; the message."""
    for stream in (False, True):
        started = time.monotonic()
        r = complete(http, model, stream=stream)
        assert time.monotonic() - started < REFUSAL_SECONDS
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        error = r.json()["error"]
        assert error["code"] == "registry_unavailable"
        assert "S3 registry s3://" in error["message"]
    return error["message"]


def tiers(http: httpx.Client, names: tuple[str, ...]) -> dict[str, str]:
    result = {}
    for name in names:
        residency = http.get(f"/v1/adapters/{name}").raise_for_status().json()["residency"]
        result[name] = residency[0]["tier"]
    return result


CACHED = ("summarize", "support", "judge")


def test_cached_adapters_serve_while_s3_hangs_or_is_down_and_others_recover(
    http: httpx.Client, weed: SeaweedFSServer
) -> None:
    for name in CACHED:  # loaded once each: the first has left the slots and host memory
        served(http, name)
    assert tiers(http, CACHED) == {"summarize": "disk", "support": "slot", "judge": "slot"}

    weed.pause()
    try:
        for name in CACHED:
            served(http, name)
        message = refused(http, "fresh-a")
        assert "timeout" in message.lower(), message
        for name in CACHED:
            served(http, name)
    finally:
        weed.resume()
    served(http, "fresh-a")  # same server, S3 answering again

    weed.stop()
    for name in CACHED:
        served(http, name)
    message = refused(http, "fresh-b")
    assert "connect" in message.lower(), message
    weed.restart()
    served(http, "fresh-b")
    for name in CACHED:
        served(http, name)
