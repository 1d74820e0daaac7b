"""Every write a running job makes to the store goes through ``JobReporter``: heartbeat,
progress, metrics, logs and the end. Each carries the attempt (the lease), so a runner that
lost its job learns it from a Conflict instead of writing over its successor."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from core.store import Job, JobState, Store


class JobReporter:
    def __init__(self, store: Store, job_id: str, attempt: int):
        self.store = store
        self.job_id = job_id
        self.attempt = attempt

    def heartbeat(self) -> Job:
        """Alive; the returned job's ``cancel_requested`` says whether to stop."""
        return self.store.jobs.heartbeat(self.job_id, self.attempt)

    def steps(self, step: int, total_steps: int) -> None:
        self.store.job_queries.set_steps(self.job_id, self.attempt, step, total_steps)

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        self.store.jobs.add_metrics(self.job_id, self.attempt, step, values)

    def logs(self, lines: Iterable[str]) -> None:
        self.store.jobs.add_logs(self.job_id, self.attempt, lines)

    def finish(
        self, state: JobState, *, result: Mapping[str, Any] | None = None, error: str | None = None
    ) -> Job:
        return self.store.jobs.finish(self.job_id, self.attempt, state, result=result, error=error)

    def give_up(self, reason: str) -> Job:
        """The attempt ends unfinished: re-queued while attempts remain, else failed."""
        return self.store.job_queries.give_up(self.job_id, self.attempt, reason)
