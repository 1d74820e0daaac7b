"""Jobs: submit retraining (reward, ppo, dpo or a whole round), follow progress, metrics and
logs, cancel, and wait for the end.

Written against the jobs API's spec (issue 12): the models keep unknown fields and give
defaults to everything but the job's identity, so a field renamed or added on the server does
not break a client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx2

from loraloop_client._base import new_idempotency_key
from loraloop_client._exceptions import APIConnectionError, APITimeoutError
from loraloop_client._models import Model, RequestModel

if TYPE_CHECKING:
    from loraloop_client._base import AsyncCore, SyncCore

JobKind = Literal["reward", "ppo", "dpo", "round"]
FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled"})
# The series `jobs watch` shows, first present wins (TRL's names; a round prefixes its
# reward model's series with "reward_model/").
REWARD_SERIES = ("objective/scores", "rewards/chosen", "reward_model/accuracy", "accuracy")
KL_SERIES = ("objective/kl", "policy/approxkl_avg")
LOSS_SERIES = ("loss/policy_avg", "loss/total_avg", "loss", "reward_model/loss")


class JobCreate(RequestModel):
    component = "JobCreate"
    kind: JobKind
    use_case: str
    params: dict[str, Any] = {}
    max_attempts: int | None = None


class JobProgress(Model):
    component = "JobProgressPublic"
    step: int | None = None
    total_steps: int | None = None
    fraction: float | None = None
    eta_seconds: float | None = None


class Job(Model):
    component = "JobPublic"
    id: str
    kind: str
    use_case: str
    state: str
    params: dict[str, Any] = {}
    attempt: int = 0
    max_attempts: int | None = None
    progress: JobProgress = JobProgress()
    metrics: dict[str, float | None] = {}
    result: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False
    worker: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def metric(self, names: tuple[str, ...]) -> float | None:
        """The latest value of the first of ``names`` the job reports."""
        return next((self.metrics[n] for n in names if self.metrics.get(n) is not None), None)


class JobList(Model):
    component = "JobList"
    data: list[Job]
    has_more: bool = False
    last_id: str | None = None


class MetricPoint(Model):
    component = "MetricPointPublic"
    step: int
    value: float | None
    time: datetime | None = None


class JobMetrics(Model):
    component = "JobMetrics"
    job_id: str
    series: dict[str, list[MetricPoint]]


class LogLine(Model):
    component = "LogLinePublic"
    seq: int
    time: datetime | None = None
    line: str


class JobLogs(Model):
    component = "JobLogs"
    job_id: str
    data: list[LogLine]
    last_seq: int | None = None


def _submit_args(
    kind: JobKind, use_case: str, params: dict[str, Any] | None, max_attempts: int | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    body = JobCreate(kind=kind, use_case=use_case, params=params or {}, max_attempts=max_attempts)
    return {"json": body.model_dump(exclude_none=True),
            "headers": {"Idempotency-Key": idempotency_key or new_idempotency_key()}}


def _list_params(use_case: str | None, state: str | list[str] | None, limit: int, after: str | None) -> dict[str, Any]:
    return {"use_case": use_case, "state": [state] if isinstance(state, str) else state,
            "limit": limit, "after": after}


def _log_line(data: str) -> LogLine:
    return LogLine.model_validate_json(data)


def _quiet(error: APIConnectionError, opened: bool) -> bool:
    """A followed log stream the server opened, then kept silent past the read timeout: the
    server sends nothing while a job writes no lines (a queued job for as long as it waits).
    That is no failure: follow again from the last line received."""
    return opened and isinstance(error, APITimeoutError)


class Jobs:
    """``client.jobs``."""

    def __init__(self, core: SyncCore) -> None:
        self._core = core

    def submit(
        self, kind: JobKind, use_case: str, params: dict[str, Any] | None = None, *,
        max_attempts: int | None = None, idempotency_key: str | None = None,
    ) -> Job:
        """Queue a job; ``params`` override the training config. A retried submission (one
        Idempotency-Key per call) queues one job."""
        args = _submit_args(kind, use_case, params, max_attempts, idempotency_key)
        return Job.model_validate(self._core.request("POST", "/v1/jobs", **args).json())

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._core.request("GET", f"/v1/jobs/{job_id}").json())

    def list(
        self, *, use_case: str | None = None, state: str | list[str] | None = None,
        limit: int = 20, after: str | None = None,
    ) -> JobList:
        """A page of jobs, newest first; pass ``page.last_id`` as ``after`` for the next."""
        params = _list_params(use_case, state, limit, after)
        return JobList.model_validate(self._core.request("GET", "/v1/jobs", params=params).json())

    def metrics(self, job_id: str, name: str | None = None) -> dict[str, list[MetricPoint]]:
        """Per-step series by name (TRL's names)."""
        response = self._core.request("GET", f"/v1/jobs/{job_id}/metrics", params={"name": name})
        return JobMetrics.model_validate(response.json()).series

    def logs(self, job_id: str, *, tail: int = 100, after: int | None = None) -> JobLogs:
        """The last ``tail`` log lines, or those after the line numbered ``after``."""
        params = {"tail": tail, "after": after}
        return JobLogs.model_validate(self._core.request("GET", f"/v1/jobs/{job_id}/logs", params=params).json())

    def follow_logs(self, job_id: str, *, tail: int = 100, after: int | None = None) -> Iterator[LogLine]:
        """Log lines as they are written, until the job ends. A dropped stream is resumed
        after the last line received."""
        failures = 0
        while True:
            params = {"tail": tail, "after": after, "follow": True}
            opened = False
            try:
                with self._core.stream("GET", f"/v1/jobs/{job_id}/logs", params=params) as response:
                    opened = True
                    for event in httpx2.EventSource(response):
                        if event.event == "end":
                            return
                        line = _log_line(event.data)
                        after, failures = line.seq, 0
                        yield line
                return  # the server closed the stream without an end event: nothing more to read
            except APIConnectionError as error:
                if _quiet(error, opened):
                    continue
                failures += 1
                if failures > self._core.max_retries:
                    raise

    def cancel(self, job_id: str) -> Job:
        """Cancel: a queued job at once, a running one at its next step."""
        return Job.model_validate(self._core.request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def wait(
        self, job_id: str, *, poll_interval: float = 2.0, timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job ends and return it (check ``job.state``); ``on_progress`` gets
        every polled state. :class:`TimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            time.sleep(poll_interval)


class AsyncJobs:
    """``async_client.jobs``: the same calls as :class:`Jobs`, awaited."""

    def __init__(self, core: AsyncCore) -> None:
        self._core = core

    async def submit(
        self, kind: JobKind, use_case: str, params: dict[str, Any] | None = None, *,
        max_attempts: int | None = None, idempotency_key: str | None = None,
    ) -> Job:
        args = _submit_args(kind, use_case, params, max_attempts, idempotency_key)
        return Job.model_validate((await self._core.request("POST", "/v1/jobs", **args)).json())

    async def get(self, job_id: str) -> Job:
        return Job.model_validate((await self._core.request("GET", f"/v1/jobs/{job_id}")).json())

    async def list(
        self, *, use_case: str | None = None, state: str | list[str] | None = None,
        limit: int = 20, after: str | None = None,
    ) -> JobList:
        params = _list_params(use_case, state, limit, after)
        return JobList.model_validate((await self._core.request("GET", "/v1/jobs", params=params)).json())

    async def metrics(self, job_id: str, name: str | None = None) -> dict[str, list[MetricPoint]]:
        response = await self._core.request("GET", f"/v1/jobs/{job_id}/metrics", params={"name": name})
        return JobMetrics.model_validate(response.json()).series

    async def logs(self, job_id: str, *, tail: int = 100, after: int | None = None) -> JobLogs:
        response = await self._core.request("GET", f"/v1/jobs/{job_id}/logs", params={"tail": tail, "after": after})
        return JobLogs.model_validate(response.json())

    async def follow_logs(self, job_id: str, *, tail: int = 100, after: int | None = None) -> AsyncIterator[LogLine]:
        failures = 0
        while True:
            params = {"tail": tail, "after": after, "follow": True}
            opened = False
            try:
                async with self._core.stream("GET", f"/v1/jobs/{job_id}/logs", params=params) as response:
                    opened = True
                    async for event in httpx2.EventSource(response):
                        if event.event == "end":
                            return
                        line = _log_line(event.data)
                        after, failures = line.seq, 0
                        yield line
                return
            except APIConnectionError as error:
                if _quiet(error, opened):
                    continue
                failures += 1
                if failures > self._core.max_retries:
                    raise

    async def cancel(self, job_id: str) -> Job:
        return Job.model_validate((await self._core.request("POST", f"/v1/jobs/{job_id}/cancel")).json())

    async def wait(
        self, job_id: str, *, poll_interval: float = 2.0, timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            await asyncio.sleep(poll_interval)
