"""The local worker and run-job on real processes: a job runs and registers its version with
TRL-named metrics; a cancel stops it and registers nothing; a run-job killed mid-job is retried
up to max_attempts; triggers queue jobs; the server's supervisor restarts a dead worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.base.folders import base_model_info
from core.errors import NotFound
from core.registry import open_registry
from core.settings import JobTrigger, Settings
from core.store import FeedbackCreate, Job, JobState, Store
from service.worker_process import WorkerSupervisor
from tests.jobs import TINY_DPO
from tests.service_process import alive
from training.jobs.local import LocalRunner
from training.jobs.triggers import fire_triggers
from training.jobs.worker import Worker
from training.synthetic import make_preference_rows


@pytest.fixture
def job_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={
        "worker_poll_seconds": 0.2, "job_heartbeat_seconds": 0.5,
        "job_heartbeat_timeout_seconds": 30.0, "job_cancel_grace_seconds": 5.0,
    })


@pytest.fixture
def store(job_settings: Settings) -> Iterator[Store]:
    with Store.from_settings(job_settings) as opened:
        for row in make_preference_rows(16, seed=3):
            opened.feedback.add(FeedbackCreate(
                "qa", 0, prompt=row["prompt"], candidates=(row["chosen"], row["rejected"])))
        yield opened


@pytest.fixture
def worker(job_settings: Settings, store: Store) -> Iterator[Worker]:
    """A worker looping in a thread of the test, with the local runner."""
    running = Worker(job_settings, store, LocalRunner(job_settings))
    stop = threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,))
    thread.start()
    yield running
    stop.set()
    thread.join(timeout=60)


def wait_for(condition: Callable[[], bool], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def state_of(store: Store, job: Job) -> JobState:
    return store.jobs.get(job.id).state


def started_training(store: Store, job: Job) -> bool:
    return (store.job_queries.progress(job.id).step or 0) >= 1


def versions(settings: Settings, adapter: str) -> list[int]:
    registry = open_registry(settings, base_model_info(settings))
    try:
        return registry.list_versions(adapter)
    except NotFound:
        return []


def test_a_queued_job_runs_registers_its_version_and_reports_trl_metrics(
    job_settings: Settings, store: Store, worker: Worker
) -> None:
    job = store.jobs.create("dpo", "qa", {**TINY_DPO, "train_steps": 3})
    wait_for(lambda: state_of(store, job).finished)
    done = store.jobs.get(job.id)
    assert done.state == JobState.SUCCEEDED, (done.error, [l.line for l in store.jobs.logs(job.id)])
    assert done.result["versions"][0]["ref"] == "qa@1" and versions(job_settings, "qa") == [1]
    assert store.job_queries.progress(job.id).step == 3
    names = {p.name for p in store.jobs.metrics(job.id)}
    assert {"loss", "rewards/accuracies", "logps/margin"} <= names
    assert any("succeeded" in line.line for line in store.jobs.logs(job.id))


def test_a_cancelled_running_job_stops_and_registers_nothing(
    job_settings: Settings, store: Store, worker: Worker
) -> None:
    job = store.jobs.create("dpo", "qa", {**TINY_DPO, "train_steps": 5000})
    wait_for(lambda: started_training(store, job))
    store.jobs.request_cancel(job.id)
    wait_for(lambda: state_of(store, job).finished, timeout=60)
    assert state_of(store, job) == JobState.CANCELLED
    assert versions(job_settings, "qa") == []


def test_a_run_job_killed_mid_job_is_retried_then_succeeds(
    job_settings: Settings, store: Store, worker: Worker
) -> None:
    job = store.jobs.create("dpo", "qa", {**TINY_DPO, "train_steps": 40}, max_attempts=2)
    wait_for(lambda: started_training(store, job))
    first = store.jobs.get(job.id)
    pid = int(first.worker.rsplit(":", 1)[1])  # run-job names itself host:pid
    os.killpg(pid, signal.SIGKILL)  # the run-job we started, by its process group
    wait_for(lambda: state_of(store, job).finished)
    done = store.jobs.get(job.id)
    assert done.state == JobState.SUCCEEDED and done.attempts == 2
    assert any("re-queued" in line.line for line in store.jobs.logs(job.id))
    assert versions(job_settings, "qa") == [1]


def test_a_killed_run_job_with_no_attempts_left_fails(store: Store, worker: Worker) -> None:
    job = store.jobs.create("dpo", "qa", {**TINY_DPO, "train_steps": 5000})
    wait_for(lambda: started_training(store, job))
    os.killpg(int(store.jobs.get(job.id).worker.rsplit(":", 1)[1]), signal.SIGKILL)
    wait_for(lambda: state_of(store, job).finished, timeout=60)
    failed = store.jobs.get(job.id)
    assert failed.state == JobState.FAILED and "SIGKILL" in failed.error


def test_triggers_queue_a_job_after_enough_new_feedback_and_never_a_second_open_one(
    job_settings: Settings, store: Store
) -> None:
    settings = job_settings.model_copy(update={"job_triggers": {
        "qa": JobTrigger(kind="dpo", after_feedback=20, params={"train_steps": 2}),
        "chat": JobTrigger(kind="dpo", every_seconds=3600),
    }})
    assert fire_triggers(settings, store) == []  # 16 new records of qa, none of chat
    for i in range(4):
        store.feedback.add(FeedbackCreate("qa", 1, prompt=f"p{i}", candidates=("a", "b")))
    store.feedback.add(FeedbackCreate("chat", 1, prompt="p", candidates=("a", "b")))
    queued = fire_triggers(settings, store)
    assert sorted((j.use_case, j.params) for j in queued) == [
        ("chat", {}), ("qa", {"train_steps": 2})]
    assert fire_triggers(settings, store) == []  # both have an open job
    for job in queued:
        store.jobs.request_cancel(job.id)
    assert fire_triggers(settings, store) == []  # nothing new since those jobs


def test_the_server_supervisor_restarts_a_dead_worker_and_stops_it(job_settings: Settings) -> None:
    supervisor = WorkerSupervisor(job_settings)
    supervisor.start()
    try:
        first = supervisor.process
        assert first is not None and first.poll() is None
        os.killpg(first.pid, signal.SIGKILL)
        wait_for(lambda: supervisor.starts == 2, timeout=30)
        assert supervisor.process.poll() is None
    finally:
        supervisor.stop()
    assert supervisor.process.poll() is not None
    assert (Path(job_settings.data_dir) / "worker" / "settings.json").stat().st_mode & 0o077 == 0


def test_a_worker_whose_supervising_server_is_killed_stops_by_itself(
    job_settings: Settings, tmp_path: Path
) -> None:
    # A stand-in server: a process that starts a supervised worker, then is SIGKILLed (no
    # chance to stop its worker). The worker must not run on as an orphan.
    pid_file = tmp_path / "worker.pid"
    server = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from core.settings import Settings; "
        "from service.worker_process import WorkerSupervisor; "
        f"s = WorkerSupervisor(Settings.model_validate_json({job_settings.model_dump_json()!r})); "
        f"s.start(); Path({str(pid_file)!r}).write_text(str(s.process.pid)); time.sleep(600)"
    )])
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", timeout=120)
        worker_pid = int(pid_file.read_text())
        server.kill()
        server.wait()
        wait_for(lambda: not alive(worker_pid), timeout=60)
    finally:
        server.kill()
