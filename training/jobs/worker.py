"""``python -m training worker``: the loop that turns queued jobs into running processes.

Each pass: reap running jobs whose heartbeat stopped (re-queued while attempts remain, else
failed); follow the runs this worker launched (a cancel asked for -> ``runner.cancel``; a
process that ended without finishing its job -> that attempt is given up); fire due triggers;
launch queued jobs, never two at once for one use case, at most ``worker_concurrency``; and
every ``promotion_every`` seconds, move pending candidates to production that labelers prefer
(``training.jobs.promotions``).

Several workers may share one store: ``run-job`` claims its job in the store, so a job two
workers launch runs once, and the claim refuses a second running job of a use case.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from core.errors import Conflict
from core.registry import Registry
from core.settings import Settings
from core.store import JobState, Store
from training.jobs.local import LocalRunner
from training.jobs.promotions import promote_pending
from training.jobs.reporter import JobReporter
from training.jobs.runner import Launch, Runner, RunPhase
from training.jobs.triggers import fire_triggers

log = logging.getLogger(__name__)

FINAL_PHASES = (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.GONE)


def make_runner(settings: Settings) -> Runner:
    """The runner ``settings.job_runner`` names."""
    if settings.job_runner == "local":
        return LocalRunner(settings)
    # The Kubernetes client loads only when a Kubernetes runner is configured.
    from training.jobs.kubernetes.runner import JobSetRunner, KubernetesJobRunner

    if settings.job_runner == "kubernetes":
        return KubernetesJobRunner.from_settings(settings.kubernetes)
    return JobSetRunner.from_settings(settings.kubernetes)


class Worker:
    def __init__(
        self, settings: Settings, store: Store, runner: Runner, *, promotion_every: float = 30.0
    ):
        self.settings = settings
        self.store = store
        self.runner = runner
        self.active: dict[str, Launch] = {}
        self._cancelling: set[str] = set()
        # Reading every adapter's aliases is a registry listing (S3 requests): not every pass.
        self.promotion_every = promotion_every
        self._next_promotion_check = 0.0
        self._registry: Registry | None = None

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set, then stop this worker's local runs."""
        log.info("job worker started (runner %s)", self.settings.job_runner)
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # a database blip must not end the worker
                log.exception("worker pass failed; retrying")
            stop.wait(self.settings.worker_poll_seconds)
        shutdown = getattr(self.runner, "shutdown", None)
        if shutdown is not None:
            shutdown()
            self.follow()
        log.info("job worker stopped")

    def tick(self) -> None:
        for job in self.store.jobs.reap_stale(self.settings.job_heartbeat_timeout_seconds):
            log.warning("job %s lost its heartbeat: now %s", job.id, job.state.value)
        self.follow()
        fire_triggers(self.settings, self.store)
        self.launch_queued()
        if time.monotonic() >= self._next_promotion_check:
            self._next_promotion_check = time.monotonic() + self.promotion_every
            promote_pending(self.registry, self.store)

    @property
    def registry(self) -> Registry:
        """The registry, opened on first use (a worker that only launches jobs needs none)."""
        if self._registry is None:
            from core.base.folders import base_model_info
            from core.registry import open_registry

            self._registry = open_registry(self.settings, base_model_info(self.settings))
        return self._registry

    def follow(self) -> None:
        """Check on every run this worker launched."""
        for job_id, launch in list(self.active.items()):
            job = self.store.jobs.get(job_id)
            status = self.runner.status(launch)
            if status.phase not in FINAL_PHASES:
                if job.cancel_requested and job_id not in self._cancelling:
                    log.info("cancelling job %s", job_id)
                    self.runner.cancel(launch)
                    self._cancelling.add(job_id)
                continue
            del self.active[job_id]
            self._cancelling.discard(job_id)
            self._ended(launch, status.reason or status.phase.value)
            forget = getattr(self.runner, "forget", None)
            if forget is not None:
                forget(launch)

    def _ended(self, launch: Launch, reason: str) -> None:
        """The process of ``launch`` is gone: give up an attempt it left unfinished."""
        job = self.store.jobs.get(launch.job_id)
        if job.state == JobState.QUEUED and job.attempts == launch.attempt - 1:
            if reason == RunPhase.SUCCEEDED.value:
                return  # run-job exited quietly: another process had it, or its use case was busy
            # it crashed before claiming: count the attempt, or a broken start loops forever
            try:
                job = self.store.job_queries.claim(launch.job_id, "worker")
            except Conflict:
                return
        if job.state != JobState.RUNNING or job.attempts != launch.attempt:
            return  # finished, or another attempt holds it
        reporter = JobReporter(self.store, job.id, launch.attempt)
        try:
            tail = self.runner.logs(launch, tail=20)
            reporter.logs(f"[runner] {line}" for line in tail)
            job = reporter.give_up(f"the job's process ended without finishing it ({reason})")
            log.warning("job %s attempt %d ended unfinished: now %s", job.id, launch.attempt, job.state.value)
        except Conflict:
            pass

    def launch_queued(self) -> None:
        free = self.settings.worker_concurrency - len(self.active)
        if free <= 0:
            return
        busy = self.store.job_queries.busy_use_cases()
        busy |= {launch.use_case for launch in self.active.values()}
        for job in self.store.job_queries.queued():
            if free <= 0:
                break
            if job.use_case in busy or job.id in self.active:
                continue
            launch = Launch(job.id, job.attempts + 1, job.kind.value, job.use_case)
            self.runner.launch(launch)
            self.active[job.id] = launch
            busy.add(job.use_case)
            free -= 1


def run_worker(settings: Settings, *, once: bool = False, parent: int | None = None) -> int:
    """Run a worker until SIGTERM or SIGINT (``once``: a single pass), or until process
    ``parent`` is gone: a worker whose server was killed must not run on unsupervised (the next
    server starts its own)."""
    stop = threading.Event()
    if parent is not None:
        threading.Thread(target=_stop_when_orphaned, args=(parent, stop), daemon=True).start()
    with Store.from_settings(settings) as store:
        worker = Worker(settings, store, make_runner(settings))
        if once:
            worker.tick()
            return 0

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        worker.run(stop)
    return 0


def _stop_when_orphaned(parent: int, stop: threading.Event) -> None:
    # A process whose parent died is re-parented (to init or a subreaper): its ppid changes.
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.warning("the process that supervised this worker (pid %d) is gone; stopping", parent)
            stop.set()
