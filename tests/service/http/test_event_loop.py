"""The event loop stays free: /healthz answers fast while adapters load and long prompts arrive."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from core.settings import Settings
from tests.adapters import publish_test_adapters
from tests.api_keys import API_KEYS, INFER_KEY
from tests.service_thread import serve

# The traffic runs in another process, so that the client's own threads do not compete with
# the server for this process's GIL. Half the workers send long bodies (40 KB of text, refused
# after tokenizing; and 90 KB, refused as too long to fit max_prompt_tokens without tokenizing
# it); half alternate adapters, which with one slot and one host copy makes every request load
# its adapter again. It stops when its stdin closes and prints the status codes it got.
TRAFFIC = r"""
import collections, json, sys, threading, httpx
url, key = sys.argv[1], sys.argv[2]
long_prompts = [" ".join(f"word{i % 997}" for i in range(n)) for n in (5_000, 11_000)]
statuses, stop = collections.Counter(), threading.Event()

def traffic(worker):
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        n = 0
        while not stop.is_set():
            model = ("summarize", "support")[(worker + n) % 2]
            if worker % 2:
                body = {"model": model, "prompt": long_prompts[n % 2]}
            else:
                body = {"model": model, "prompt": "hello there", "max_tokens": 4}
            statuses[c.post("/v1/completions", json=body).status_code] += 1
            if sum(statuses.values()) == 4:
                print("started", flush=True)
            n += 1

workers = [threading.Thread(target=traffic, args=(w,)) for w in range(4)]
for w in workers:
    w.start()
sys.stdin.read()
stop.set()
for w in workers:
    w.join()
print(json.dumps(statuses), flush=True)
"""


@pytest.fixture(scope="module")
def busy_url(tmp_path_factory, tiny_llama_dir) -> Iterator[str]:
    """A server with one slot and room for one host copy: alternating adapters reload each time."""
    data = tmp_path_factory.mktemp("busy")
    settings = Settings(
        data_dir=data / "data", base_model=str(tiny_llama_dir), base_model_id="tiny-llama",
        device="cpu", dtype="float32", alias_poll_seconds=0, api_keys=API_KEYS,
        max_active_adapters=1, max_host_adapters=1,
    )
    publish_test_adapters(settings, data)
    with serve(settings) as url:
        yield url


def test_healthz_answers_within_50_ms_during_adapter_loads_and_long_prompts(busy_url):
    latencies = []
    with httpx.Client(base_url=busy_url) as c:
        c.get("/healthz")  # the connection is open before measuring
        traffic = subprocess.Popen(
            [sys.executable, "-c", TRAFFIC, busy_url, INFER_KEY],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert traffic.stdout is not None and traffic.stdout.readline().strip() == "started"
            for _ in range(200):
                started = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.005)
            statuses, _ = traffic.communicate(timeout=120)  # closes its stdin: it stops
        finally:
            if traffic.poll() is None:
                traffic.kill()
    statuses = {int(code): n for code, n in json.loads(statuses).items()}
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert statuses.get(200, 0) >= 4 and statuses.get(400, 0) >= 4, statuses
    assert p99 < 0.050, f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
