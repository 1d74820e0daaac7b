"""POST /v1/rewards: score completions of a prompt with a registered reward adapter."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from service.auth import InferCaller
from service.openapi import errors
from service.rewards.protocol import RewardRequest, RewardResponse
from service.rewards.service import RewardService

router = APIRouter(tags=["rewards"])


async def get_rewards(request: Request) -> RewardService:
    return request.app.state.services.rewards


RewardsDep = Annotated[RewardService, Depends(get_rewards)]


@router.post("/v1/rewards", response_model=RewardResponse, responses=errors(404, 422, 502))
async def score(body: RewardRequest, _: InferCaller, rewards: RewardsDep) -> RewardResponse:
    """Scalar rewards of each (prompt, completion) under a reward adapter; higher is better."""
    return await rewards.score(body)
