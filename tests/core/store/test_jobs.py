"""The job queue: lifecycle, atomic claims under concurrency, cancellation, lost heartbeats."""

from __future__ import annotations

import math
import threading
from datetime import timedelta

import pytest

from core.errors import Conflict, InvalidRequest, LeaseLost, NotFound
from core.store import JobState, Store


def test_a_job_runs_from_queued_to_succeeded_with_progress_metrics_and_logs(store: Store) -> None:
    job = store.jobs.create("ppo", "summarize", {"kl_coeff": 0.05, "steps": 10})
    assert (job.state, job.attempts, job.progress) == (JobState.QUEUED, 0, 0.0)

    claimed = store.jobs.claim_next("worker-a")
    assert claimed is not None and claimed.id == job.id
    assert (claimed.state, claimed.attempts, claimed.worker) == (JobState.RUNNING, 1, "worker-a")
    assert claimed.started_at is not None and claimed.heartbeat_at is not None

    store.jobs.set_progress(job.id, 1, 0.5)
    store.jobs.add_metrics(job.id, 1, 1, {"loss": 0.9, "kl": 0.01})
    store.jobs.add_metrics(job.id, 1, 2, {"loss": float("nan")})
    store.jobs.add_logs(job.id, 1, ["step 1", "step 2"])
    assert store.jobs.heartbeat(job.id, attempt=1).progress == 0.5

    done = store.jobs.finish(job.id, 1, "succeeded", result={"versions": ["summarize@4"]})
    assert (done.state, done.progress, done.result) == (
        JobState.SUCCEEDED,
        1.0,
        {"versions": ["summarize@4"]},
    )
    assert done.finished_at is not None
    loss = store.jobs.metrics(job.id, "loss")
    assert [(p.step, p.value) for p in loss[:1]] == [(1, 0.9)] and math.isnan(loss[1].value)
    assert [p.name for p in store.jobs.metrics(job.id)] == ["kl", "loss", "loss"]
    lines = store.jobs.logs(job.id)
    assert [ln.line for ln in lines] == ["step 1", "step 2"]
    assert [ln.line for ln in store.jobs.logs(job.id, after=lines[0].seq)] == ["step 2"]
    assert store.jobs.get(job.id) == done


def test_claims_take_the_oldest_queued_job_of_the_wanted_kinds(store: Store) -> None:
    first = store.jobs.create("reward", "qa")
    second = store.jobs.create("dpo", "qa")
    third = store.jobs.create("reward", "qa")
    assert store.jobs.claim_next("w", kinds=["dpo"]).id == second.id  # type: ignore[union-attr]
    assert store.jobs.claim_next("w").id == first.id  # type: ignore[union-attr]
    assert store.jobs.claim_next("w").id == third.id  # type: ignore[union-attr]
    assert store.jobs.claim_next("w") is None


def test_concurrent_workers_never_claim_the_same_job(database_url: str) -> None:
    jobs_total, workers = 24, 4
    with Store.open(database_url) as setup:
        created = {setup.jobs.create("dpo", "qa").id for _ in range(jobs_total)}
    # One Store per worker: separate engines and connections, as separate processes have.
    stores = [Store.open(database_url) for _ in range(workers)]
    barrier = threading.Barrier(workers)
    claimed: list[list[str]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        barrier.wait()
        try:
            while (job := stores[index].jobs.claim_next(f"w{index}")) is not None:
                claimed[index].append(job.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == []
        every_claim = [job_id for ids in claimed for job_id in ids]
        assert len(every_claim) == len(set(every_claim)) == jobs_total
        assert set(every_claim) == created
        assert all(j.attempts == 1 for j in stores[0].jobs.list(limit=jobs_total))
    finally:
        for s in stores:
            s.close()


def test_claiming_a_given_job_works_once(store: Store) -> None:
    job = store.jobs.create("round", "qa")
    assert store.jobs.claim(job.id, "runner").state == JobState.RUNNING
    with pytest.raises(Conflict):
        store.jobs.claim(job.id, "runner")
    with pytest.raises(NotFound):
        store.jobs.claim("job-missing", "runner")


def test_cancelling_a_queued_job_ends_it_and_a_running_one_asks_its_runner(store: Store) -> None:
    queued = store.jobs.create("dpo", "qa")
    cancelled = store.jobs.request_cancel(queued.id)
    assert cancelled.state == JobState.CANCELLED and cancelled.finished_at is not None
    assert store.jobs.claim_next("w") is None

    running = store.jobs.create("dpo", "qa")
    store.jobs.claim_next("w")
    assert store.jobs.request_cancel(running.id).state == JobState.RUNNING
    assert store.jobs.heartbeat(running.id, 1).cancel_requested
    assert store.jobs.finish(running.id, 1, "cancelled").state == JobState.CANCELLED
    assert store.jobs.request_cancel(running.id).state == JobState.CANCELLED  # unchanged


def test_a_lost_heartbeat_requeues_until_attempts_run_out_then_fails(store: Store) -> None:
    job = store.jobs.create("ppo", "qa", max_attempts=2)
    first = store.jobs.claim_next("w1")
    assert first is not None and first.heartbeat_at is not None
    timeout = timedelta(seconds=30)

    assert store.jobs.reap_stale(timeout) == []  # fresh heartbeat: left alone
    later = first.heartbeat_at + timeout + timedelta(seconds=1)
    requeued = store.jobs.reap_stale(timeout, now=later)
    assert [(j.id, j.state, j.attempts) for j in requeued] == [(job.id, JobState.QUEUED, 1)]
    with pytest.raises(Conflict):  # the first runner wakes up: it no longer holds the job
        store.jobs.heartbeat(job.id, attempt=1)

    second = store.jobs.claim_next("w2")
    assert second is not None and second.attempts == 2
    with pytest.raises(Conflict):
        store.jobs.finish(job.id, 1, "succeeded")  # nor can it finish its successor's attempt
    later = second.heartbeat_at + timeout + timedelta(seconds=1)  # type: ignore[operator]
    [failed] = store.jobs.reap_stale(timeout, now=later)
    assert failed.state == JobState.FAILED and "heartbeat" in (failed.error or "")
    assert failed.finished_at is not None
    assert any("re-queued" in ln.line for ln in store.jobs.logs(job.id))


def test_a_lost_heartbeat_after_a_cancel_request_ends_cancelled(store: Store) -> None:
    job = store.jobs.create("ppo", "qa", max_attempts=3)
    claimed = store.jobs.claim_next("w")
    store.jobs.request_cancel(job.id)
    later = claimed.heartbeat_at + timedelta(minutes=5)  # type: ignore[union-attr,operator]
    [reaped] = store.jobs.reap_stale(60, now=later)
    assert reaped.state == JobState.CANCELLED


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda s: s.jobs.create("sft", "qa"), "kind"),
        (lambda s: s.jobs.create("dpo", "Bad Name"), "use_case"),
        (lambda s: s.jobs.create("dpo", "qa", {"lr": float("nan")}), "params"),
        (lambda s: s.jobs.create("dpo", "qa", max_attempts=0), "max_attempts"),
    ],
)
def test_invalid_jobs_are_refused_naming_the_field(store: Store, call, param: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest) as caught:
        call(store)
    assert caught.value.param == param


def test_progress_and_final_states_are_checked(store: Store) -> None:
    job = store.jobs.create("dpo", "qa")
    store.jobs.claim_next("w")
    with pytest.raises(InvalidRequest):
        store.jobs.set_progress(job.id, 1, 1.5)
    with pytest.raises(InvalidRequest):
        store.jobs.finish(job.id, 1, "running")
    with pytest.raises(InvalidRequest) as caught:
        store.jobs.finish(job.id, 1, "exploded")
    assert caught.value.param == "state"
    with pytest.raises(InvalidRequest) as caught:
        store.jobs.list(state="sleeping")
    assert caught.value.param == "state"
    with pytest.raises(NotFound):
        store.jobs.add_logs("job-missing", 1, ["x"])
    with pytest.raises(NotFound):
        store.jobs.get("job-missing")


def test_a_runner_that_lost_its_job_cannot_write_progress_metrics_or_logs(store: Store) -> None:
    job = store.jobs.create("ppo", "qa", max_attempts=2)
    store.jobs.claim_next("zombie")  # attempt 1
    store.jobs.reap_stale(0, now=store.jobs.get(job.id).heartbeat_at + timedelta(seconds=1))
    successor = store.jobs.claim_next("successor")
    assert successor is not None and successor.attempts == 2
    store.jobs.set_progress(job.id, 2, 0.25)
    reaped_log = [ln.line for ln in store.jobs.logs(job.id)]

    for write in (
        lambda: store.jobs.set_progress(job.id, 1, 0.9),
        lambda: store.jobs.add_metrics(job.id, 1, 7, {"loss": 0.1}),
        lambda: store.jobs.add_logs(job.id, 1, ["zombie step"]),
    ):
        with pytest.raises(LeaseLost, match="attempt 1 no longer holds the job"):
            write()
    assert store.jobs.get(job.id).progress == 0.25
    assert store.jobs.metrics(job.id) == []
    assert [ln.line for ln in store.jobs.logs(job.id)] == reaped_log

    store.jobs.finish(job.id, 2, "succeeded")
    with pytest.raises(LeaseLost):
        store.jobs.add_logs(job.id, 2, ["after the end"])
