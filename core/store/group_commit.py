"""Group commit: the writes of many callers in one transaction, each caller told when its own
write is durable.

Callers (request threads) hand an item to ``submit`` and wait on the future it returns. One
writer thread takes everything queued when it is free and writes it with ``write_batch``, in one
transaction; each future is set after that transaction has committed, so a caller that got its
result holds a durable record. There is no waiting window: an item that arrives at rest is
written at once, alone, and under load a batch is what arrived during the previous commit.
One transaction per batch instead of one per item saves a BEGIN/COMMIT (and on SQLite the
wait for the single write lock, which callers in many threads would otherwise queue for).

``write_batch(items)`` returns one outcome per item, a result or the exception for that item
alone (an invalid record fails only itself); an exception it raises fails the whole batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from core.batches import next_batch

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 256  # bounds one transaction's size (and the wait of the batch's first caller)


class GroupCommit(Generic[T, R]):
    """A writer thread, started at the first ``submit``, that writes queued items in batches."""

    def __init__(self, write_batch: Callable[[list[T]], Sequence[R | BaseException]], name: str):
        self._write_batch = write_batch
        self._name = name
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; the future holds its outcome once its batch has committed."""
        future: Future[R] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put((item, future))
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread (a later ``submit`` starts another)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch, closing = next_batch(self._queue, MAX_BATCH)
            if batch:
                self._write(batch)
            if closing:  # close(): what was queued before it is written
                return

    def _write(self, batch: list[tuple[T, Future[R]]]) -> None:
        # A future cancelled while queued (its caller went away: an HTTP client that hung up)
        # is dropped unwritten; the others can no longer be cancelled.
        batch = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            outcomes = self._write_batch([item for item, _ in batch])
            assert len(outcomes) == len(batch), "write_batch must return one outcome per item"
        except BaseException as e:  # the whole batch failed (database down, say): tell every caller
            for _, future in batch:
                future.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
