"""Draining a writer thread's queue in batches: wait for one item, then take what else has
queued meanwhile. A None in the queue is its owner's close signal."""

from __future__ import annotations

import queue
from typing import TypeVar

T = TypeVar("T")


def next_batch(source: queue.Queue[T | None] | queue.SimpleQueue[T | None], limit: int) -> tuple[list[T], bool]:
    """Block for an item, then take those already queued, up to ``limit`` in all: (the batch,
    whether the close signal was taken). The batch holds what was queued before the signal
    and may then be empty."""
    first = source.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < limit:
        try:
            item = source.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False
