"""/v1/jobs: queue training jobs, follow their progress, metrics and logs, cancel them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from core.store import JobState
from service.auth import AdminCaller, AnyCaller
from service.jobs.protocol import (
    JobCreate,
    JobList,
    JobLogEnd,
    JobLogs,
    JobMetrics,
    JobPublic,
    JobStateName,
    LogLinePublic,
)
from service.jobs.service import JobService
from service.openapi import errors, event_stream

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


async def get_jobs(request: Request) -> JobService:
    return request.app.state.services.jobs


JobsDep = Annotated[JobService, Depends(get_jobs)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
FOLLOW_POLL_SECONDS = 0.5
MAX_SEQ = (1 << 63) - 1  # a log line's seq is a 64-bit integer in the store


@router.post(
    "", response_model=JobPublic, status_code=201,
    responses={200: {"model": JobPublic, "description": "A retry: the job its Idempotency-Key queued."}, **errors(409)},
)
async def create_job(
    body: JobCreate, response: Response, _: AdminCaller, jobs: JobsDep,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    """Queue a training job (reward, ppo, dpo or a whole round) for a use case."""
    job, created = await asyncio.to_thread(jobs.submit, body, idempotency_key)
    if not created:
        response.status_code = 200  # a retry: the job queued the first time
    return job


@router.get("", response_model=JobList)
async def list_jobs(
    _: AnyCaller,
    jobs: JobsDep,
    use_case: str | None = None,
    job_state: Annotated[list[JobStateName] | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(description="The last id of the previous page.")] = None,
) -> JobList:
    """Jobs, newest first, by use case and state, a page at a time."""
    states = [JobState(s) for s in job_state] if job_state else None
    return await asyncio.to_thread(jobs.list, use_case, states, limit, after)


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(job_id: str, _: AnyCaller, jobs: JobsDep) -> JobPublic:
    """A job: state, attempt, progress with an ETA, latest metrics, result, error."""
    return await asyncio.to_thread(jobs.get, job_id)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=errors(409))
async def cancel_job(job_id: str, _: AdminCaller, jobs: JobsDep) -> JobPublic:
    """Cancel: a queued job at once, a running one at its next step; it registers nothing."""
    return await asyncio.to_thread(jobs.cancel, job_id)


@router.get("/{job_id}/metrics", response_model=JobMetrics)
async def job_metrics(
    job_id: str, _: AnyCaller, jobs: JobsDep, name: str | None = None
) -> JobMetrics:
    """The per-step metric series (TRL's names), optionally one of them."""
    return await asyncio.to_thread(jobs.metrics, job_id, name)


@router.get(
    "/{job_id}/logs", response_model=JobLogs, responses=event_stream(LogLinePublic, JobLogEnd, sentinel=None)
)
async def job_logs(
    job_id: str,
    request: Request,
    _: AnyCaller,
    jobs: JobsDep,
    tail: Annotated[int, Query(ge=1, le=10_000)] = 100,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="Lines after this seq.")] = None,
    follow: bool = False,
):
    """The log's last lines (or those after a seq); with follow, a server-sent event stream."""
    if after is not None:
        page = await asyncio.to_thread(jobs.logs, job_id, after, tail)
    else:
        page = await asyncio.to_thread(jobs.tail, job_id, tail)
    if not follow:
        return page
    return StreamingResponse(
        _follow(request, jobs, job_id, page), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _follow(
    request: Request, jobs: JobService, job_id: str, page: JobLogs
) -> AsyncIterator[str]:
    """One ``data:`` event per log line until the job ends, then an ``end`` event with its
    state. Ends early when the client goes away."""
    after = page.last_seq
    for line in page.data:
        yield f"id: {line.seq}\ndata: {line.model_dump_json()}\n\n"
    while not await request.is_disconnected():
        job_state = await asyncio.to_thread(jobs.state, job_id)  # read before the lines
        more = await asyncio.to_thread(jobs.logs, job_id, after, 1000)
        for line in more.data:
            yield f"id: {line.seq}\ndata: {line.model_dump_json()}\n\n"
        after = more.last_seq
        if job_state.finished and not more.data:
            yield f"event: end\ndata: {json.dumps(JobLogEnd(state=job_state.value).model_dump())}\n\n"
            return
        if not more.data:
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
