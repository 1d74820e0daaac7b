"""/v1/labeling: queues of pairs for people to compare (admins create and fill them)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from service.auth import AdminCaller, FeedbackCaller
from service.labeling.protocol import (
    FillReport,
    QueueCreate,
    QueueFill,
    QueueList,
    QueuePublic,
    VoteList,
)
from service.labeling.service import LabelingService

router = APIRouter(prefix="/v1/labeling", tags=["labeling"])


async def get_labeling(request: Request) -> LabelingService:
    return request.app.state.services.labeling


LabelingDep = Annotated[LabelingService, Depends(get_labeling)]


@router.post("/queues", response_model=QueuePublic, status_code=201)
async def create_queue(body: QueueCreate, caller: AdminCaller, labeling: LabelingDep) -> QueuePublic:
    """Create an empty labeling queue for a use case."""
    return await asyncio.to_thread(labeling.create_queue, body, caller)


@router.get("/queues", response_model=QueueList)
async def list_queues(_: FeedbackCaller, labeling: LabelingDep, use_case: str | None = None) -> QueueList:
    """Queues with their progress and labeler agreement, newest first."""
    return QueueList(data=await asyncio.to_thread(labeling.queues, use_case))


@router.get("/queues/{queue_id}", response_model=QueuePublic)
async def get_queue(queue_id: str, _: FeedbackCaller, labeling: LabelingDep) -> QueuePublic:
    """One queue: progress, and per pair of labelers their agreement on the overlap."""
    return await asyncio.to_thread(labeling.describe, queue_id)


@router.post("/queues/{queue_id}/pairs", response_model=FillReport)
async def fill_queue(queue_id: str, body: QueueFill, _: AdminCaller, labeling: LabelingDep) -> FillReport:
    """Add pairs from the completion log, or generate them now."""
    if body.source == "generate":
        return await labeling.fill_generated(queue_id, body)
    return await asyncio.to_thread(labeling.fill_from_log, queue_id, body)


@router.get("/queues/{queue_id}/votes", response_model=VoteList)
async def list_votes(queue_id: str, _: FeedbackCaller, labeling: LabelingDep) -> VoteList:
    """The raw votes: canonical verdict, sides shown, time taken, rationale."""
    return VoteList(data=await asyncio.to_thread(labeling.votes, queue_id))
