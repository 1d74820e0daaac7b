"""A server SIGKILLed while clients post feedback loses no acknowledged post and stores none
twice: clients retry unacknowledged posts with the same Idempotency-Key after a restart."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from core.store import Store
from tests.ports import free_port
from tests.service_process import server_env, server_process

CLIENTS = 8


def body(key: str) -> dict:
    return {"use_case": "durable", "prompt": f"prompt {key}", "candidates": [f"a {key}", f"b {key}"], "choice": 0}


def test_sigkill_loses_no_acknowledged_feedback_and_duplicates_none(tmp_path, tiny_llama_dir, database_url):
    env = server_env(tmp_path, tiny_llama_dir, database_url=database_url, demo_adapter=True)
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

    with server_process(env, port) as server:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=30)
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
