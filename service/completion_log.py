"""The completion log: served completions written to the store off the request path.

Requests hand records to a bounded queue and return at once; one writer thread drains it in
batches. A full queue drops the record (counted in /metrics), and so does a batch the database
refused three times: logging never blocks or fails a request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable

from core.batches import next_batch
from core.store import Completion, Store
from service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

BATCH = 256
WRITE_ATTEMPTS = 3


class CompletionLogWriter:
    def __init__(self, store: Store, metrics: ServiceMetrics, max_queue: int):
        self.store = store
        self.metrics = metrics
        self._queue: queue.Queue[Completion | None] = queue.Queue(max_queue)
        # Ids queued and not yet written (or dropped): feedback naming one waits for it alone.
        self._pending: set[str] = set()
        self._written = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="loraloop-completion-log", daemon=True)
        self._thread.start()

    def submit(self, record: Completion) -> None:
        """Queue a record; never blocks."""
        with self._written:
            self._pending.add(record.id)
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._settle([record])
            self.metrics.completion_log_dropped.inc()

    def wait_for(self, ids: Iterable[str], timeout: float = 5.0) -> bool:
        """Wait until none of ``ids`` is still queued (each is written, or was dropped); False
        on timeout. Records queued by other requests, before or after, are not waited for."""
        wanted = set(ids)
        with self._written:
            return self._written.wait_for(lambda: not wanted & self._pending, timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued so far is written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            batch, closing = next_batch(self._queue, BATCH)
            if batch:
                self._write(batch)
            if closing:  # close(): what was queued before it is written
                self._queue.task_done()  # the close signal's own
                return

    def _write(self, batch: list[Completion]) -> None:
        try:
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                try:
                    self.store.completions.log(batch)
                    return
                except Exception:  # the database is down or busy: retry, then drop
                    if attempt == WRITE_ATTEMPTS:
                        log.exception("dropping %d completion records", len(batch))
                        self.metrics.completion_log_dropped.inc(len(batch))
                    else:
                        time.sleep(0.1 * attempt)
        finally:
            self._settle(batch)
            for _ in batch:
                self._queue.task_done()

    def _settle(self, records: list[Completion]) -> None:
        with self._written:
            self._pending.difference_update(r.id for r in records)
            self._written.notify_all()
