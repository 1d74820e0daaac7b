"""The completion log never blocks a request: a full queue drops (and counts) records."""

from __future__ import annotations

import threading
import time

from core.names import AdapterVersion
from core.store import Completion, Store
from service.completion_log import CompletionLogWriter
from service.metrics import ServiceMetrics

# An open (keyless) app answers only loopback peers; the test client's default peer is not one.
LOOPBACK = ("127.0.0.1", 50000)


def record(i: int, version: AdapterVersion | None = AdapterVersion("summarize", 2)) -> Completion:
    return Completion(
        id=f"cmpl-{i:032x}", prompt="p", text=f"text {i}", version=version,
        sampling_params={"seed": i, "finish_reason": "length"},
        prompt_tokens=1, completion_tokens=2, latency_ms=3.0,
    )


class GatedStore:
    """A real store whose writes wait for a gate: a database that is slow or locked."""

    def __init__(self, store: Store):
        self.gate = threading.Event()
        self._store = store
        self.completions = self

    def log(self, items):
        self.gate.wait(30)
        return self._store.completions.log(items)


def dropped(metrics: ServiceMetrics) -> float:
    return metrics.registry.get_sample_value("loraloop_completion_log_dropped_total") or 0.0


def test_records_are_written_with_adapter_and_version(settings):
    store = Store.from_settings(settings)
    writer = CompletionLogWriter(store, ServiceMetrics("m"), max_queue=100)
    writer.submit(record(1))
    writer.submit(record(2, version=None))
    assert writer.flush(5)
    first, second = store.completions.get(record(1).id), store.completions.get(record(2).id)
    assert first.version is not None
    assert (first.version.adapter, first.version.version, first.text) == ("summarize", 2, "text 1")
    assert second.version is None
    writer.close()
    store.close()


def test_a_full_queue_drops_and_counts_without_blocking(settings):
    store = Store.from_settings(settings)
    gated = GatedStore(store)
    metrics = ServiceMetrics("m")
    writer = CompletionLogWriter(gated, metrics, max_queue=4)
    started = time.monotonic()
    for i in range(50):
        writer.submit(record(i))
    assert time.monotonic() - started < 0.5  # never waited for the database
    assert dropped(metrics) >= 50 - 4 - 1  # the queue holds 4, the writer holds 1 batch
    gated.gate.set()
    assert writer.flush(10)
    kept = [i for i in range(50) if _exists(store, record(i).id)]
    assert len(kept) + dropped(metrics) == 50
    writer.close()
    store.close()


def _exists(store: Store, completion_id: str) -> bool:
    from core.errors import NotFound

    try:
        store.completions.get(completion_id)
        return True
    except NotFound:
        return False


def test_completion_logging_can_be_switched_off(settings):
    from fastapi.testclient import TestClient

    from service.app import create_app

    quiet = settings.model_copy(update={"log_completions": False})
    with TestClient(create_app(quiet), client=LOOPBACK) as client:
        response = client.post("/v1/completions", json={"model": "base", "prompt": "hi", "max_tokens": 2})
        assert response.status_code == 200 and response.json()["completion_id"] is None
    with TestClient(create_app(settings), client=LOOPBACK) as client:
        logged = client.post("/v1/completions", json={"model": "base", "prompt": "hi", "max_tokens": 2}).json()
        assert logged["completion_id"].startswith("cmpl-")
        body = {"use_case": "demo", "completion_ids": [logged["completion_id"], "cmpl-other"], "choice": 0}
        # the id is known to the store as soon as the response is out (the log is flushed first)
        assert "cmpl-other" in client.post("/v1/feedback", json=body).json()["error"]["message"]


class SelectivelyGatedStore(GatedStore):
    """Batches holding a record of ``stuck`` wait for the gate; others are written at once."""

    def __init__(self, store: Store, stuck: set[str]):
        super().__init__(store)
        self.stuck = stuck

    def log(self, items):
        items = list(items)
        if self.stuck & {c.id for c in items}:
            self.gate.wait(30)
        return self._store.completions.log(items)


def test_feedback_waits_only_for_the_completions_it_names(settings):
    store = Store.from_settings(settings)
    slow = record(2)
    gated = SelectivelyGatedStore(store, {slow.id})
    writer = CompletionLogWriter(gated, ServiceMetrics("m"), max_queue=100)
    writer.submit(record(1))
    assert writer.wait_for([record(1).id])
    writer.submit(slow)  # steady traffic: the writer is busy with a batch that does not finish
    writer.submit(record(3))
    # A completion already written needs no wait, however busy the queue is.
    assert writer.wait_for([record(1).id, "cmpl-never-logged"], timeout=30)
    assert not writer.flush(0.05)
    # One still queued is waited for (and is not there yet while its batch is stuck).
    assert not writer.wait_for([record(3).id], timeout=0.05)
    gated.gate.set()
    assert writer.wait_for([record(3).id], timeout=30)
    assert _exists(store, record(3).id) and _exists(store, slow.id)
    writer.close()
    store.close()
