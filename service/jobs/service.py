"""The jobs API's logic on the store. Blocking calls: the router runs them in a thread."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime

from core.job_spec import plan_job
from core.settings import Settings
from core.store import Job, JobState, LogLine, Store
from core.store.models import utcnow
from service.jobs.protocol import (
    JobCreate,
    JobList,
    JobLogs,
    JobMetrics,
    JobProgressPublic,
    JobPublic,
    LogLinePublic,
    MetricPointPublic,
)

MAX_LOG_LINES = 10_000


def eta_seconds(job: Job, fraction: float, now: datetime) -> float | None:
    """Remaining time at the pace so far: elapsed * (1 - p) / p (None before any progress)."""
    if job.state != JobState.RUNNING or job.started_at is None or not 0 < fraction < 1:
        return None
    elapsed = (now - job.started_at).total_seconds()
    return round(elapsed * (1 - fraction) / fraction, 1)


class JobService:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store

    def submit(self, body: JobCreate, idempotency_key: str | None) -> tuple[JobPublic, bool]:
        plan_job(body.kind, body.use_case, body.params)  # 400 naming the field, before queueing
        job, created = self.store.job_queries.submit(
            body.kind, body.use_case, body.params,
            max_attempts=body.max_attempts or self.settings.job_max_attempts,
            idempotency_key=idempotency_key,
        )
        return self.public(job), created

    def get(self, job_id: str) -> JobPublic:
        return self.public(self.store.jobs.get(job_id))

    def state(self, job_id: str) -> JobState:
        """Only the job's state (no progress or metrics reads): what a log follower polls."""
        return self.store.jobs.get(job_id).state

    def list(
        self, use_case: str | None, states: list[JobState] | None, limit: int, after: str | None
    ) -> JobList:
        page = self.store.job_queries.page(use_case=use_case, states=states, limit=limit, after=after)
        data = [self.public(job) for job in page.jobs]
        return JobList(data=data, has_more=page.has_more, last_id=data[-1].id if data else None)

    def cancel(self, job_id: str) -> JobPublic:
        return self.public(self.store.jobs.request_cancel(job_id))

    def metrics(self, job_id: str, name: str | None) -> JobMetrics:
        series: dict[str, list[MetricPointPublic]] = defaultdict(list)
        for point in self.store.jobs.metrics(job_id, name):
            value = None if math.isnan(point.value) else point.value
            series[point.name].append(MetricPointPublic(step=point.step, value=value, time=point.time))
        return JobMetrics(job_id=job_id, series=dict(series))

    def logs(self, job_id: str, after: int, limit: int) -> JobLogs:
        lines = self.store.jobs.logs(job_id, after=after, limit=min(limit, MAX_LOG_LINES))
        return JobLogs(job_id=job_id, data=[log_public(line) for line in lines],
                       last_seq=lines[-1].seq if lines else after)

    def tail(self, job_id: str, tail: int) -> JobLogs:
        """The last ``tail`` lines."""
        lines: list[LogLine] = []
        after = 0
        while chunk := self.store.jobs.logs(job_id, after=after, limit=MAX_LOG_LINES):
            lines = (lines + chunk)[-tail:]
            after = chunk[-1].seq
        return JobLogs(job_id=job_id, data=[log_public(line) for line in lines], last_seq=after)

    def public(self, job: Job) -> JobPublic:
        steps = self.store.job_queries.progress(job.id)
        return JobPublic(
            id=job.id, kind=job.kind.value, use_case=job.use_case, state=job.state.value,
            params=job.params, attempt=job.attempts, max_attempts=job.max_attempts,
            progress=JobProgressPublic(
                step=steps.step, total_steps=steps.total_steps, fraction=job.progress,
                eta_seconds=eta_seconds(job, job.progress, utcnow()),
            ),
            metrics=self.store.job_queries.latest_metrics(job.id),
            result=job.result, error=job.error, cancel_requested=job.cancel_requested,
            worker=job.worker, created_at=job.created_at, started_at=job.started_at,
            finished_at=job.finished_at, heartbeat_at=job.heartbeat_at,
        )


def log_public(line: LogLine) -> LogLinePublic:
    return LogLinePublic(seq=line.seq, time=line.time, line=line.line)
