"""The job queries the API and the worker use: pages, one running job per use case, steps, and
giving up on an attempt whose process ended. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from core.errors import Conflict, InvalidRequest
from core.store import FeedbackCreate, JobState, Store


def test_jobs_are_listed_newest_first_in_pages_filtered_by_use_case_and_state(store: Store) -> None:
    created = [store.jobs.create("dpo", "qa" if i % 2 else "chat") for i in range(5)]
    store.jobs.claim(created[0].id, "w")
    first = store.job_queries.page(use_case="chat", limit=2)
    assert [j.id for j in first.jobs] == [created[4].id, created[2].id] and first.has_more
    second = store.job_queries.page(use_case="chat", limit=2, after=first.jobs[-1].id)
    assert [j.id for j in second.jobs] == [created[0].id] and not second.has_more
    running = store.job_queries.page(states=[JobState.RUNNING])
    assert [j.id for j in running.jobs] == [created[0].id]
    with pytest.raises(InvalidRequest):
        store.job_queries.page(after="job-unknown")


def test_a_use_case_with_a_running_job_cannot_start_another(store: Store) -> None:
    first, second = store.jobs.create("dpo", "qa"), store.jobs.create("ppo", "qa")
    other = store.jobs.create("dpo", "chat")
    store.job_queries.claim(first.id, "w1")
    with pytest.raises(Conflict, match="running"):
        store.job_queries.claim(second.id, "w2")
    assert store.job_queries.claim(other.id, "w2").state == JobState.RUNNING
    assert store.job_queries.busy_use_cases() == {"qa", "chat"}
    store.jobs.finish(first.id, 1, "succeeded")
    assert store.job_queries.claim(second.id, "w2").attempts == 1


def test_concurrent_claims_for_one_use_case_start_only_one(database_url: str) -> None:
    with Store.open(database_url) as setup:
        ids = [setup.jobs.create("dpo", "qa").id for _ in range(4)]
    stores = [Store.open(database_url) for _ in ids]
    won: list[str] = []
    barrier = threading.Barrier(len(ids))

    def claim(store: Store, job_id: str) -> None:
        barrier.wait()
        try:
            won.append(store.job_queries.claim(job_id, "w").id)
        except Conflict:
            pass

    threads = [threading.Thread(target=claim, args=pair) for pair in zip(stores, ids, strict=True)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(won) == 1
    finally:
        for s in stores:
            s.close()


def test_steps_set_progress_and_need_the_current_attempt(store: Store) -> None:
    job = store.jobs.create("dpo", "qa")
    store.job_queries.claim(job.id, "w")
    store.job_queries.set_steps(job.id, 1, 5, 20)
    assert store.jobs.get(job.id).progress == 0.25
    assert store.job_queries.progress(job.id).step == 5
    with pytest.raises(Conflict):
        store.job_queries.set_steps(job.id, 2, 6, 20)


def test_giving_up_on_an_attempt_requeues_while_attempts_remain_then_fails(store: Store) -> None:
    job = store.jobs.create("dpo", "qa", max_attempts=2)
    store.job_queries.claim(job.id, "w")
    assert store.job_queries.give_up(job.id, 1, "exit code -9").state == JobState.QUEUED
    store.job_queries.claim(job.id, "w")
    failed = store.job_queries.give_up(job.id, 2, "exit code 1")
    assert failed.state == JobState.FAILED and failed.error == "exit code 1"
    assert any("re-queued" in line.line for line in store.jobs.logs(job.id))


def test_latest_metrics_and_feedback_counts(store: Store) -> None:
    job = store.jobs.create("dpo", "qa")
    store.job_queries.claim(job.id, "w")  # metrics are written by the attempt holding the job
    store.jobs.add_metrics(job.id, 1, 1, {"loss": 0.9, "objective/kl": 0.1})
    store.jobs.add_metrics(job.id, 1, 2, {"loss": 0.5})
    assert store.job_queries.latest_metrics(job.id) == {"loss": 0.5, "objective/kl": 0.1}
    store.feedback.add(FeedbackCreate("qa", 0, prompt="p", candidates=("a", "b")))
    assert store.job_queries.feedback_since("qa", None) == 1
    assert store.job_queries.feedback_since("qa", job.created_at) == 1
    assert store.job_queries.feedback_since("chat", None) == 0


def test_an_idempotency_key_returns_the_first_job_and_refuses_a_different_body(store: Store) -> None:
    first, created = store.job_queries.submit(
        "dpo", "qa", {"train_steps": 3}, max_attempts=1, idempotency_key="k1"
    )
    again, created_again = store.job_queries.submit(
        "dpo", "qa", {"train_steps": 3}, max_attempts=1, idempotency_key="k1"
    )
    assert created and not created_again and again.id == first.id
    with pytest.raises(Conflict, match="different job"):
        store.job_queries.submit("dpo", "qa", {"train_steps": 4}, max_attempts=1, idempotency_key="k1")
    _, fresh = store.job_queries.submit("dpo", "qa", {}, max_attempts=1, idempotency_key=None)
    assert fresh and len(store.jobs.list()) == 2
