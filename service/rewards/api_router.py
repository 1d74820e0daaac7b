"""POST /v1/rewards: score completions of a prompt with a registered reward adapter."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from core.names import parse_ref
from service.auth import InferCaller
from service.openapi import errors
from service.rewards.protocol import RewardRequest, RewardResponse, RewardScore
from service.state import ServiceState, get_state

router = APIRouter(tags=["rewards"])
StateDep = Annotated[ServiceState, Depends(get_state)]


@router.post("/v1/rewards", response_model=RewardResponse, responses=errors(404, 422, 502))
async def score(body: RewardRequest, _: InferCaller, state: StateDep) -> RewardResponse:
    """Scalar rewards of each (prompt, completion) under a reward adapter; higher is better."""
    scores = await state.engine.score(parse_ref(body.model, param="model"), body.prompt, body.completions)
    return RewardResponse(
        model=body.model, data=[RewardScore(index=i, score=s) for i, s in enumerate(scores)]
    )
