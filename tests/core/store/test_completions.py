"""The completion log: bulk insert, retry-safe, read back intact."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.errors import NotFound
from core.names import AdapterVersion
from core.store import Completion, Store, new_completion_id


def test_a_batch_is_logged_and_read_back_field_for_field(store: Store) -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    batch = [
        Completion(
            id=new_completion_id(),
            prompt=f"prompt {i}",
            text=f"text {i}",
            version=AdapterVersion("summarize", 3) if i else None,
            sampling_params={"temperature": 0.7, "stop": ["\n"]},
            prompt_tokens=10 + i,
            completion_tokens=20 + i,
            latency_ms=12.5,
            created_at=when,
        )
        for i in range(50)
    ]
    assert store.completions.log(batch) == 50
    assert store.completions.get(batch[0].id) == batch[0]  # the base model: adapter None
    assert store.completions.get(batch[7].id) == batch[7]


def test_relogging_the_same_ids_inserts_nothing_twice(store: Store) -> None:
    first = Completion(id="cmpl-1", prompt="p", text="a")
    assert store.completions.log([first]) == 1
    assert store.completions.log([first, Completion(id="cmpl-2", prompt="p", text="b")]) == 1
    assert store.completions.get("cmpl-1").created_at is not None  # filled in when logged


def test_an_unknown_completion_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.completions.get("cmpl-missing")
