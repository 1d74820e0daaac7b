"""The job queue: training jobs, their state machine, heartbeats, progress, metrics and logs.

::

    queued ──claim──► running ──finish──► succeeded | failed | cancelled
      │  ▲               │
      │  └─reap (lost heartbeat, attempts < max_attempts)
      └─cancel──► cancelled          (running: cancel_requested, the runner finishes it)

A claim increments ``attempts``; that number is the runner's lease. Every write a runner
makes (``heartbeat``, ``set_progress``, ``add_metrics``, ``add_logs``, ``finish``) takes it back
and raises LeaseLost (a Conflict) once the job was re-queued, claimed again or finished, so a
runner that lost its job (network partition, long GC pause) learns to stop instead of
writing into its successor's progress, metrics and logs.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidRequest, LeaseLost, NotFound
from core.store.db import Database
from core.store.models import JobLogRow, JobMetricRow, JobRow, utcnow
from core.store.records import Job, JobKind, JobState, LogLine, MetricPoint
from core.store.validation import check_use_case

MAX_METRIC_NAME_CHARS = 128

E = TypeVar("E", bound=StrEnum)


class Jobs:
    """Create, claim and follow jobs. Built by ``Store``; thread- and process-safe."""

    def __init__(self, database: Database):
        self._db = database

    # --- creating and reading ---

    def create(
        self,
        kind: JobKind | str,
        use_case: str,
        params: Mapping[str, Any] | None = None,
        *,
        max_attempts: int = 1,
    ) -> Job:
        """Queue a new job. ``max_attempts`` > 1 lets a job whose runner died run again."""
        row = new_job_row(kind, use_case, params or {}, max_attempts)
        with self._db.write() as session:
            session.add(row)
        return to_job(row)

    def get(self, job_id: str) -> Job:
        with self._db.read() as session:
            return to_job(_get(session, job_id))

    # --- running ---

    def claim_next(self, worker: str, kinds: Collection[JobKind | str] | None = None) -> Job | None:
        """Atomically take the oldest queued job (of ``kinds``) for ``worker``; None if none.

        Two workers never get the same job: PostgreSQL skips rows another claim has locked
        (FOR UPDATE SKIP LOCKED); SQLite serialises write transactions (BEGIN IMMEDIATE).
        """
        statement = (
            select(JobRow)
            .where(JobRow.state == JobState.QUEUED, JobRow.cancel_requested.is_(False))
            .order_by(JobRow.created_at, JobRow.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if kinds is not None:
            statement = statement.where(
                JobRow.kind.in_([_parse(JobKind, k, "kinds") for k in kinds])
            )
        with self._db.write() as session:
            row = session.scalars(statement).first()
            if row is None:
                return None
            _start(row, worker)
            return to_job(row)

    def claim(self, job_id: str, worker: str) -> Job:
        """Take a given queued job (``python -m training run-job ID``); Conflict if not queued."""
        with self._db.write() as session:
            row = _get(session, job_id, lock=True)
            if row.state != JobState.QUEUED or row.cancel_requested:
                raise Conflict(f"job {job_id} is {row.state.value}, not queued")
            _start(row, worker)
            return to_job(row)

    def heartbeat(self, job_id: str, attempt: int) -> Job:
        """Record that the runner of ``attempt`` is alive; the returned job's
        ``cancel_requested`` tells it to stop. LeaseLost if the attempt lost the job."""
        with self._db.write() as session:
            row = _leased(session, job_id, attempt)
            row.heartbeat_at = utcnow()
            return to_job(row)

    def set_progress(self, job_id: str, attempt: int, progress: float) -> None:
        """Progress as a fraction in [0, 1]; LeaseLost if the attempt lost the job."""
        if not isinstance(progress, int | float) or not 0.0 <= progress <= 1.0:
            raise InvalidRequest("progress: must be a number in [0, 1]", param="progress")
        with self._db.write() as session:
            _leased(session, job_id, attempt).progress = float(progress)

    def finish(
        self,
        job_id: str,
        attempt: int,
        state: JobState | str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Job:
        """End a running job as succeeded, failed or cancelled; LeaseLost if the attempt lost it.

        ``result`` names what the job produced (e.g. registered versions)."""
        state = _parse(JobState, state, "state")
        if not state.finished:
            raise InvalidRequest(f"state: {state.value} is not a final state", param="state")
        result_json = None if result is None else _json_object(result, "result")
        with self._db.write() as session:
            row = _leased(session, job_id, attempt)
            row.state = state
            row.result = result_json
            row.error = error
            row.finished_at = utcnow()
            if state == JobState.SUCCEEDED:
                row.progress = 1.0
            return to_job(row)

    def request_cancel(self, job_id: str) -> Job:
        """Cancel: a queued job at once; a running one is flagged for its runner to stop.
        A finished job is returned unchanged."""
        with self._db.write() as session:
            row = _get(session, job_id, lock=True)
            if row.state == JobState.QUEUED:
                row.state = JobState.CANCELLED
                row.finished_at = utcnow()
            elif row.state == JobState.RUNNING:
                row.cancel_requested = True
            return to_job(row)

    def reap_stale(self, timeout: timedelta | float, *, now: datetime | None = None) -> list[Job]:
        """Handle running jobs with no heartbeat for ``timeout`` (seconds or timedelta): re-queue
        them while ``attempts < max_attempts``, else mark them failed (cancelled if a cancel
        was requested). Returns the jobs changed. Safe to run from several processes."""
        if not isinstance(timeout, timedelta):
            timeout = timedelta(seconds=timeout)
        now = now or utcnow()
        cutoff = now - timeout
        statement = (
            select(JobRow)
            .where(JobRow.state == JobState.RUNNING, JobRow.heartbeat_at < cutoff)
            .order_by(JobRow.heartbeat_at)
            .with_for_update(skip_locked=True)
        )
        changed = []
        with self._db.write() as session:
            for row in session.scalars(statement):
                lost = (
                    f"no heartbeat since {row.heartbeat_at:%Y-%m-%dT%H:%M:%SZ} from worker "
                    f"{row.worker} (attempt {row.attempts} of {row.max_attempts})"
                )
                if row.cancel_requested:
                    row.state, row.finished_at = JobState.CANCELLED, now
                elif row.attempts < row.max_attempts:
                    row.state, row.worker, row.heartbeat_at = JobState.QUEUED, None, None
                    lost += "; re-queued"
                else:
                    row.state, row.finished_at, row.error = JobState.FAILED, now, lost
                session.add(JobLogRow(job_id=row.id, time=now, line=lost))
                changed.append(to_job(row))
        return changed

    # --- metrics and logs ---

    def add_metrics(
        self,
        job_id: str,
        attempt: int,
        step: int,
        values: Mapping[str, float],
        *,
        time: datetime | None = None,
    ) -> None:
        """Record metric values at a training step. Non-finite values are kept as NaN.
        LeaseLost if the attempt lost the job."""
        time = time or utcnow()
        rows = []
        for name, value in values.items():
            if not isinstance(name, str) or not 0 < len(name) <= MAX_METRIC_NAME_CHARS:
                raise InvalidRequest(
                    f"metric names must be 1-{MAX_METRIC_NAME_CHARS} characters", param="name"
                )
            number = float(value)
            # SQLite stores NaN as NULL; store every non-finite value as NULL on both backends.
            finite = number if math.isfinite(number) else None
            rows.append(
                {"job_id": job_id, "step": step, "name": name, "value": finite, "time": time}
            )
        if not rows:
            return
        with self._db.write() as session:
            _leased(session, job_id, attempt)
            session.execute(insert(JobMetricRow), rows)

    def metrics(self, job_id: str, name: str | None = None) -> list[MetricPoint]:
        """The job's metric series, by name then step."""
        statement = (
            select(JobMetricRow)
            .where(JobMetricRow.job_id == job_id)
            .order_by(JobMetricRow.name, JobMetricRow.step, JobMetricRow.id)
        )
        if name is not None:
            statement = statement.where(JobMetricRow.name == name)
        with self._db.read() as session:
            _get(session, job_id)
            return [
                MetricPoint(
                    step=r.step,
                    name=r.name,
                    value=math.nan if r.value is None else r.value,
                    time=r.time,
                )
                for r in session.scalars(statement)
            ]

    def add_logs(self, job_id: str, attempt: int, lines: Iterable[str]) -> None:
        """Append log lines (in order); LeaseLost if the attempt lost the job."""
        time = utcnow()
        # PostgreSQL text cannot hold NUL; a stray one must not fail a training run.
        rows = [
            {"job_id": job_id, "time": time, "line": line.replace("\x00", "\ufffd")}
            for line in lines
        ]
        if not rows:
            return
        with self._db.write() as session:
            _leased(session, job_id, attempt)
            session.execute(insert(JobLogRow), rows)

    def logs(self, job_id: str, *, after: int = 0, limit: int = 1000) -> list[LogLine]:
        """Log lines with ``seq > after``, oldest first (tail with the last seq seen)."""
        statement = (
            select(JobLogRow)
            .where(JobLogRow.job_id == job_id, JobLogRow.id > after)
            .order_by(JobLogRow.id)
            .limit(limit)
        )
        with self._db.read() as session:
            _get(session, job_id)
            return [LogLine(seq=r.id, time=r.time, line=r.line) for r in session.scalars(statement)]

    # Last in the class: a method named ``list`` would shadow the builtin in annotations below.
    def list(
        self, *, use_case: str | None = None, state: JobState | str | None = None, limit: int = 100
    ) -> list[Job]:
        """Jobs, newest first."""
        statement = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id).limit(limit)
        if use_case is not None:
            statement = statement.where(JobRow.use_case == use_case)
        if state is not None:
            statement = statement.where(JobRow.state == _parse(JobState, state, "state"))
        with self._db.read() as session:
            return [to_job(row) for row in session.scalars(statement)]


def new_job_row(
    kind: JobKind | str, use_case: str, params: Mapping[str, Any], max_attempts: int
) -> JobRow:
    """A queued job's row, its arguments checked (InvalidRequest naming the bad one)."""
    kind = _parse(JobKind, kind, "kind")
    check_use_case(use_case)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidRequest("max_attempts: must be an integer >= 1", param="max_attempts")
    return JobRow(
        id=f"job-{uuid.uuid4().hex}",
        kind=kind,
        use_case=use_case,
        state=JobState.QUEUED,
        params=_json_object(params, "params"),
        progress=0.0,
        result=None,
        error=None,
        attempts=0,
        max_attempts=max_attempts,
        worker=None,
        cancel_requested=False,
        heartbeat_at=None,
        created_at=utcnow(),
        started_at=None,
        finished_at=None,
    )


def _parse(enum: type[E], value: object, param: str) -> E:
    try:
        return enum(str(value))  # str() of a member is its value (StrEnum)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise InvalidRequest(
            f"{param}: must be one of {allowed}, got {value!r}", param=param
        ) from None


def _get(session: Session, job_id: str, *, lock: bool = False) -> JobRow:
    statement = select(JobRow).where(JobRow.id == job_id)
    if lock:
        statement = statement.with_for_update()
    row = session.scalars(statement).first()
    if row is None:
        raise NotFound(f"no job with id {job_id!r}")
    return row


def _leased(session: Session, job_id: str, attempt: int) -> JobRow:
    """The job's row, locked, if ``attempt`` still holds it (running, not claimed since)."""
    row = _get(session, job_id, lock=True)
    if row.state != JobState.RUNNING or row.attempts != attempt:
        raise LeaseLost(
            f"job {job_id} attempt {attempt} no longer holds the job "
            f"(state {row.state.value}, attempt {row.attempts}); stop working on it"
        )
    return row


def _start(row: JobRow, worker: str) -> None:
    now = utcnow()
    row.state = JobState.RUNNING
    row.worker = worker
    row.attempts += 1
    row.started_at = now
    row.heartbeat_at = now


def _json_object(value: Mapping[str, Any], param: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{param}: must be a JSON object", param=param)
    try:
        copy: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
        return copy
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{param}: not serialisable as JSON ({exc})", param=param) from None


def to_job(row: JobRow) -> Job:
    return Job(
        id=row.id,
        kind=row.kind,
        use_case=row.use_case,
        state=row.state,
        params=row.params,
        progress=row.progress,
        result=row.result,
        error=row.error,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        worker=row.worker,
        cancel_requested=row.cancel_requested,
        heartbeat_at=row.heartbeat_at,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )
