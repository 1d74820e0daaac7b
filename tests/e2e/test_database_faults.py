"""PostgreSQL failing under feedback ingestion: sessions ended by an administrator
(pg_terminate_backend), then the database killed and started again, while clients post feedback.
Every answer is 201 or 503 with Retry-After (never a 500, never a hang); clients that retry a
503 with the same Idempotency-Key get their 201; what was acknowledged is stored once.

The database is a private cluster (tests/postgres_cluster.py), never the shared one."""

from __future__ import annotations

import collections
import threading
import time

import httpx

from core.settings import Settings
from core.store import Store
from tests.postgres_cluster import PostgresCluster
from tests.service_thread import serve

CLIENTS = 6
DEADLINE_SECONDS = 90


def body(key: str) -> dict:
    return {"use_case": "pg-faults", "prompt": f"prompt {key}", "candidates": [f"a {key}", f"b {key}"],
            "choice": 1}


class Clients:
    """Threads posting new feedback until stopped; each post retried on 503 until acknowledged."""

    def __init__(self, url: str):
        self.url = url
        self.acked: list[str] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.unexpected: list[str] = []  # answers other than 201 and 503-with-Retry-After
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.deadline = time.monotonic() + DEADLINE_SECONDS
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(CLIENTS)]

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            n = 0
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                self._post_until_acknowledged(http, f"c{index}-{n}")
                n += 1

    def _post_until_acknowledged(self, http: httpx.Client, key: str) -> None:
        while time.monotonic() < self.deadline:
            try:
                r = http.post("/v1/feedback", json=body(key), headers={"Idempotency-Key": key})
            except httpx.TransportError as e:
                self._unexpected(f"{key}: {e!r}")
                return
            with self.lock:
                self.statuses[r.status_code] += 1
            if r.status_code == 201:
                with self.lock:
                    self.acked.append(key)
                return
            error = r.json()["error"]
            if r.status_code != 503 or "retry-after" not in r.headers or error["code"] != "store_unavailable":
                self._unexpected(f"{key}: {r.status_code} {r.headers.get('retry-after')} {r.text}")
                return
            time.sleep(0.1)  # a client honouring Retry-After would wait longer; the test can't
        self._unexpected(f"{key}: never acknowledged")

    def _unexpected(self, what: str) -> None:
        with self.lock:
            self.unexpected.append(what)

    def wait_for_more(self, count: int) -> None:
        target = len(self.acked) + count
        while len(self.acked) < target:
            assert time.monotonic() < self.deadline, f"stuck at {len(self.acked)} acknowledged posts"
            assert not self.unexpected, self.unexpected[:5]
            time.sleep(0.02)


def test_feedback_posts_get_201_or_503_across_terminated_sessions_and_a_restart(
    private_postgres: PostgresCluster, settings: Settings
) -> None:
    settings = settings.model_copy(update={"database_url": private_postgres.url})
    with serve(settings) as url:
        clients = Clients(url)
        for thread in clients.threads:
            thread.start()
        try:
            clients.wait_for_more(30)
            ended = 0
            for _ in range(3):
                ended += private_postgres.terminate_connections()
                clients.wait_for_more(10)
            private_postgres.restart(down_seconds=1.0)  # a crash, then a second without a database
            clients.wait_for_more(30)
        finally:
            clients.stop.set()
            for thread in clients.threads:
                thread.join(timeout=60)
        after = httpx.post(f"{url}/v1/feedback", json=body("after"), headers={"Idempotency-Key": "after"})
        assert after.status_code == 201, after.text

    assert not clients.unexpected, clients.unexpected[:5]
    assert ended >= 1, "no session was ended: the pool held no connection"
    assert clients.statuses[503] >= 1, f"the restart was never noticed: {clients.statuses}"
    with Store.open(private_postgres.url) as store:
        prompts = [row["input_text"] for row in store.feedback.export("pg-faults", "vertex")]
    assert len(prompts) == len(set(prompts)), "a post was stored twice"
    stored = {p.removeprefix("prompt ") for p in prompts}
    assert stored == set(clients.acked) | {"after"}, "stored posts differ from acknowledged ones"
    print(f"statuses {dict(clients.statuses)}, {len(clients.acked)} acknowledged, {ended} sessions ended")
