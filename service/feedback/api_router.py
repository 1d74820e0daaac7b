"""/v1/feedback: pairwise preferences in, preference datasets and snapshots out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Header, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from service.auth import FeedbackCaller
from service.feedback.protocol import (
    FeedbackCreateRequest,
    FeedbackPublic,
    FeedbackStatsPublic,
    ImportReportPublic,
    SnapshotCreate,
    SnapshotList,
    SnapshotPublic,
    TrlExportRow,
    VertexExportRow,
)
from service.feedback.service import FeedbackService
from service.openapi import errors, json_lines

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


async def get_feedback(request: Request) -> FeedbackService:
    return request.app.state.services.feedback


FeedbackDep = Annotated[FeedbackService, Depends(get_feedback)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


@router.post("", response_model=FeedbackPublic, status_code=201, responses=errors(404, 409))
async def add_feedback(
    body: FeedbackCreateRequest, caller: FeedbackCaller, feedback: FeedbackDep, idempotency_key: IdempotencyKey = None
) -> FeedbackPublic:
    """Record which of two completions a person (or a model) prefers."""
    return await feedback.add(body, idempotency_key, caller)


# The body is capped as it arrives (max_import_bytes, service/body_limit.py), before FastAPI
# spools the file.
@router.post("/import", response_model=ImportReportPublic, responses=errors(409))
async def import_feedback(
    caller: FeedbackCaller,
    feedback: FeedbackDep,
    file: Annotated[UploadFile, File(description="JSONL, plain or gzip: Vertex or TRL rows.")],
    use_case: Annotated[str, Query()],
    format: Annotated[Literal["vertex", "trl"] | None, Query(description="Detected when omitted.")] = None,
    source: Annotated[Literal["human", "model"], Query()] = "human",
    idempotency_key: IdempotencyKey = None,
) -> ImportReportPublic:
    """Import a preference file in one transaction; reports rejected lines and why."""
    return await asyncio.to_thread(
        feedback.import_file, file.file, use_case, format, caller, source, idempotency_key
    )


@router.get("/export", response_class=StreamingResponse, responses=json_lines(VertexExportRow, TrlExportRow))
async def export_feedback(
    _: FeedbackCaller,
    feedback: FeedbackDep,
    use_case: Annotated[str, Query()],
    format: Annotated[Literal["vertex", "trl"], Query()] = "vertex",
    include_ties: bool = False,
) -> StreamingResponse:
    """Stream a use case's preferences as JSONL in the Vertex or TRL format."""
    rows = await asyncio.to_thread(feedback.export, use_case, format, include_ties)

    async def lines() -> AsyncIterator[str]:
        async for row in iterate_in_threadpool(rows):
            yield json.dumps(row, ensure_ascii=False) + "\n"

    filename = f"{use_case}-{format}.jsonl"
    return StreamingResponse(
        lines(), media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.post("/snapshots", response_model=SnapshotPublic, status_code=201)
async def create_snapshot(body: SnapshotCreate, _: FeedbackCaller, feedback: FeedbackDep) -> SnapshotPublic:
    """Freeze a use case's current preferences (ties excluded) for a training run."""
    return await asyncio.to_thread(feedback.create_snapshot, body.use_case)


@router.get("/snapshots", response_model=SnapshotList)
async def list_snapshots(_: FeedbackCaller, feedback: FeedbackDep, use_case: str | None = None) -> SnapshotList:
    """Snapshots, newest first."""
    return SnapshotList(data=await asyncio.to_thread(feedback.snapshots, use_case))


@router.get("/snapshots/{snapshot_id}", response_model=SnapshotPublic)
async def get_snapshot(snapshot_id: str, _: FeedbackCaller, feedback: FeedbackDep) -> SnapshotPublic:
    """One snapshot: its row count and content hash."""
    return await asyncio.to_thread(feedback.snapshot, snapshot_id)


@router.get("/stats", response_model=FeedbackStatsPublic)
async def feedback_stats(
    _: FeedbackCaller,
    feedback: FeedbackDep,
    use_case: str | None = None,
    a: Annotated[str | None, Query(description="'name@N' or 'base': head-to-head with b.")] = None,
    b: Annotated[str | None, Query()] = None,
) -> FeedbackStatsPublic:
    """Counts per use case and per adapter version; the win rate of a over b when both given."""
    return await asyncio.to_thread(feedback.stats, use_case, a, b)
