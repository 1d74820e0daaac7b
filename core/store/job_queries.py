"""What the job API, the worker and the runners need beyond ``Jobs``: pages of jobs, a claim
that keeps one running job per use case, progress as steps, and giving up on one attempt.

Kept apart from ``jobs.py`` (the queue's core state machine); every write here that a running
job makes is fenced by its attempt, like ``Jobs.heartbeat``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidRequest, NotFound
from core.store.db import Database
from core.store.jobs import Jobs, _leased, new_job_row, to_job
from core.store.models import FeedbackRow, JobLogRow, JobMetricRow, JobRow, utcnow
from core.store.records import Job, JobKind, JobState

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class JobProgress:
    """Training steps done of the total (both None until the run reports its first step)."""

    step: int | None
    total_steps: int | None


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    has_more: bool


class JobQueries:
    """Built by ``Store``; thread- and process-safe."""

    def __init__(self, database: Database):
        self._db = database

    # --- creating ---

    def submit(
        self,
        kind: JobKind | str,
        use_case: str,
        params: Mapping[str, Any],
        *,
        max_attempts: int,
        idempotency_key: str | None,
    ) -> tuple[Job, bool]:
        """Queue a job; (job, created). With an idempotency key, a retry with the same body
        returns the job queued the first time (created False); a different body is a Conflict."""
        if idempotency_key is None:
            return Jobs(self._db).create(kind, use_case, params, max_attempts=max_attempts), True
        row = new_job_row(kind, use_case, params, max_attempts)
        body = {"kind": str(row.kind), "use_case": use_case, "params": row.params,
                "max_attempts": max_attempts}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        row.idempotency_key, row.request_sha256 = idempotency_key, digest
        try:
            with self._db.write() as session:
                existing = _by_key(session, idempotency_key)
                if existing is not None:
                    return _replay(existing, digest), False
                session.add(row)
                session.flush()
                return to_job(row), True
        except IntegrityError:  # PostgreSQL: a concurrent retry committed first
            with self._db.read() as session:
                existing = _by_key(session, idempotency_key)
                if existing is None:
                    raise
                return _replay(existing, digest), False

    # --- reading ---

    def page(
        self,
        *,
        use_case: str | None = None,
        states: Collection[JobState] | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> JobPage:
        """Jobs newest first, ``limit`` at a time; ``after`` is the last id of the previous page
        (OpenAI's cursor pagination)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit: must be in [1, {MAX_PAGE}]", param="limit")
        statement = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc())
        if use_case is not None:
            statement = statement.where(JobRow.use_case == use_case)
        if states:
            statement = statement.where(JobRow.state.in_(list(states)))
        with self._db.read() as session:
            if after is not None:
                cursor = session.get(JobRow, after)
                if cursor is None:
                    raise InvalidRequest(f"after: no job with id {after!r}", param="after")
                # (created_at, id) descending: strictly older, or as old with a smaller id
                statement = statement.where(
                    (JobRow.created_at < cursor.created_at)
                    | ((JobRow.created_at == cursor.created_at) & (JobRow.id < cursor.id))
                )
            rows = list(session.scalars(statement.limit(limit + 1)))
            return JobPage([to_job(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def progress(self, job_id: str) -> JobProgress:
        with self._db.read() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                return JobProgress(None, None)
            return JobProgress(row.step, row.total_steps)

    def latest_metrics(self, job_id: str) -> dict[str, float | None]:
        """The last value of each metric series (None where it was not finite)."""
        last = (
            select(JobMetricRow.name, func.max(JobMetricRow.id).label("id"))
            .where(JobMetricRow.job_id == job_id)
            .group_by(JobMetricRow.name)
            .subquery()
        )
        statement = select(JobMetricRow.name, JobMetricRow.value).join(
            last, JobMetricRow.id == last.c.id
        )
        with self._db.read() as session:
            return {name: value for name, value in session.execute(statement)}

    def queued(self, limit: int = 100) -> list[Job]:
        """Queued jobs not asked to cancel, oldest first (what a worker launches next)."""
        statement = (
            select(JobRow)
            .where(JobRow.state == JobState.QUEUED, JobRow.cancel_requested.is_(False))
            .order_by(JobRow.created_at, JobRow.id)
            .limit(limit)
        )
        with self._db.read() as session:
            return [to_job(r) for r in session.scalars(statement)]

    def busy_use_cases(self) -> set[str]:
        """Use cases with a running job."""
        statement = select(JobRow.use_case).where(JobRow.state == JobState.RUNNING).distinct()
        with self._db.read() as session:
            return set(session.scalars(statement))

    def last_created(self, use_case: str) -> Job | None:
        statement = (
            select(JobRow)
            .where(JobRow.use_case == use_case)
            .order_by(JobRow.created_at.desc(), JobRow.id.desc())
            .limit(1)
        )
        with self._db.read() as session:
            row = session.scalars(statement).first()
            return None if row is None else to_job(row)

    def has_open_job(self, use_case: str) -> bool:
        """A queued or running job exists for ``use_case``."""
        statement = select(func.count()).where(
            JobRow.use_case == use_case,
            JobRow.state.in_([JobState.QUEUED, JobState.RUNNING]),
        )
        with self._db.read() as session:
            return bool(session.scalar(statement))

    def feedback_since(self, use_case: str, since: datetime | None) -> int:
        """Feedback records of ``use_case`` created after ``since`` (all when None)."""
        statement = select(func.count()).where(FeedbackRow.use_case == use_case)
        if since is not None:
            statement = statement.where(FeedbackRow.created_at > since)
        with self._db.read() as session:
            return int(session.scalar(statement) or 0)

    # --- running ---

    def claim(self, job_id: str, worker: str) -> Job:
        """Take a queued job, as ``Jobs.claim`` does, unless another job of its use case runs.

        Conflict when the job is not queued or its use case is busy. The rows of the use case
        are locked first, so two claims for one use case serialise (PostgreSQL) and the second
        sees the first's running job; SQLite serialises every write transaction anyway."""
        with self._db.write() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"no job with id {job_id!r}")
            ids = select(JobRow.id).where(JobRow.use_case == row.use_case).order_by(JobRow.id)
            list(session.scalars(ids.with_for_update()))
            session.refresh(row)
            if row.state != JobState.QUEUED or row.cancel_requested:
                raise Conflict(f"job {job_id} is {row.state.value}, not queued")
            running = session.scalar(
                select(JobRow.id).where(
                    JobRow.use_case == row.use_case,
                    JobRow.state == JobState.RUNNING,
                    JobRow.id != job_id,
                )
            )
            if running is not None:
                raise Conflict(f"job {running} of use case {row.use_case!r} is running")
            now = utcnow()
            row.state, row.worker, row.attempts = JobState.RUNNING, worker, row.attempts + 1
            row.started_at = row.heartbeat_at = now
            row.step = row.total_steps = None
            return to_job(row)

    def set_steps(self, job_id: str, attempt: int, step: int, total_steps: int) -> None:
        """Progress of ``attempt`` as steps; also sets the fraction ``progress``."""
        if not 0 <= step <= total_steps or total_steps < 1:
            raise InvalidRequest("step: must be in [0, total_steps]", param="step")
        with self._db.write() as session:
            row = _leased(session, job_id, attempt)
            row.step, row.total_steps, row.progress = step, total_steps, step / total_steps

    def give_up(self, job_id: str, attempt: int, reason: str) -> Job:
        """The process running ``attempt`` ended without finishing the job: re-queue it while
        attempts remain, else fail it (cancel it if a cancel was asked), as ``reap_stale`` does
        for a lost heartbeat, but at once. Conflict if the attempt no longer holds the job."""
        now = utcnow()
        with self._db.write() as session:
            row = _leased(session, job_id, attempt)
            line = f"attempt {attempt} of {row.max_attempts} ended: {reason}"
            if row.cancel_requested:
                row.state, row.finished_at = JobState.CANCELLED, now
            elif row.attempts < row.max_attempts:
                row.state, row.worker, row.heartbeat_at = JobState.QUEUED, None, None
                line += "; re-queued"
            else:
                row.state, row.finished_at, row.error = JobState.FAILED, now, reason
            session.add(JobLogRow(job_id=row.id, time=now, line=line))
            return to_job(row)


def _by_key(session: Session, key: str) -> JobRow | None:
    return session.scalars(select(JobRow).where(JobRow.idempotency_key == key)).first()


def _replay(row: JobRow, digest: str) -> Job:
    if row.request_sha256 != digest:
        raise Conflict(
            f"idempotency key already used for a different job ({row.id}); "
            "use a new key for a new job"
        )
    return to_job(row)
