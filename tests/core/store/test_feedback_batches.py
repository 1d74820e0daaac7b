"""Feedback added in batches (the group commit's unit): one transaction, each record's own
outcome, retries replayed whether the first attempt is stored or in the same batch."""

from __future__ import annotations

import threading

from sqlalchemy import event

from core.errors import Conflict, InvalidRequest
from core.store import Feedback, FeedbackCreate, Store
from tests.core.store.test_feedback import count_feedback


def post(n: int, key: str | None = None, choice: object = 0) -> FeedbackCreate:
    return FeedbackCreate(
        use_case="qa", prompt=f"Q{n}?", candidates=[f"x{n}", f"y{n}"], choice=choice, idempotency_key=key
    )


def test_a_batch_stores_the_valid_records_and_refuses_each_bad_one_alone(store: Store) -> None:
    outcomes = store.feedback.add_batch([
        post(1, key="k1"),
        post(2, choice=7),          # invalid choice
        post(1, key="k1"),          # retry of the first, in the same batch
        post(3, key="k1"),          # the same key for another body
        post(4),
    ])
    first, invalid, retry, conflict, last = outcomes
    assert isinstance(first, Feedback) and isinstance(last, Feedback)
    assert isinstance(invalid, InvalidRequest) and invalid.param == "choice"
    assert isinstance(retry, Feedback) and retry.id == first.id
    assert isinstance(conflict, Conflict) and f"id {first.id}" in str(conflict)
    assert count_feedback(store) == 2
    assert store.feedback.get(last.id) == last


def test_a_batch_replays_a_post_stored_before(store: Store) -> None:
    stored = store.feedback.add(post(1, key="k1"))
    (again,) = store.feedback.add_batch([post(1, key="k1")])
    assert again == stored
    assert count_feedback(store) == 1


def test_concurrent_posts_share_transactions_and_all_land(store: Store) -> None:
    commits = 0

    def count(_: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(store.database.engine, "commit", count)
    threads, per_thread = 16, 20
    ids: list[int] = []
    barrier = threading.Barrier(threads)

    def client(t: int) -> None:
        barrier.wait()
        for n in range(per_thread):
            ids.append(store.feedback.add(post(t * 100 + n, key=f"{t}-{n}")).id)

    workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert len(set(ids)) == threads * per_thread
    assert count_feedback(store) == threads * per_thread
    assert 0 < commits < threads * per_thread, "every post had a transaction of its own"
