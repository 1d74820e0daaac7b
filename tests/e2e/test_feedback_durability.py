"""A server SIGKILLed while clients post feedback loses no acknowledged post and stores none
twice: clients retry unacknowledged posts with the same Idempotency-Key after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from core.store import Store
from tests.service.http.conftest import free_port

CLIENTS = 8


@contextmanager
def server_process(env: dict[str, str], port: int) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def body(key: str) -> dict:
    return {"use_case": "durable", "prompt": f"prompt {key}", "candidates": [f"a {key}", f"b {key}"], "choice": 0}


def test_sigkill_loses_no_acknowledged_feedback_and_duplicates_none(tmp_path, tiny_llama_dir, database_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    env |= {"LORALOOP_DATA_DIR": str(tmp_path), "LORALOOP_BASE_MODEL": str(tiny_llama_dir),
            "LORALOOP_DATABASE_URL": database_url, "LORALOOP_DEVICE": "cpu"}
    port = free_port()
    acked: set[str] = set()
    attempted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(index: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            n = 0
            while not stop.is_set():
                key = f"c{index}-{n}"
                n += 1
                with lock:
                    attempted.append(key)
                try:
                    r = http.post("/v1/feedback", json=body(key), headers={"Idempotency-Key": key})
                except httpx.TransportError:
                    return  # the server died under us
                if 200 <= r.status_code < 300:
                    with lock:
                        acked.add(key)

    with server_process(env, port) as process:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert len(acked) >= 200, "too few posts before the kill to mean anything"

    # After a restart, clients retry every post they have no answer for, with the same key.
    with server_process(env, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for key in attempted:
                if key not in acked:
                    r = http.post("/v1/feedback", json=body(key), headers={"Idempotency-Key": key})
                    assert r.status_code == 201, r.text

    with Store.open(database_url) as store:
        rows = list(store.feedback.export("durable", "vertex"))
    prompts = [row["input_text"] for row in rows]
    assert len(prompts) == len(set(prompts)), "a post was stored twice"
    stored = {p.removeprefix("prompt ") for p in prompts}
    assert acked <= stored, f"acknowledged posts lost: {sorted(acked - stored)[:5]}"
    assert stored == set(attempted)
