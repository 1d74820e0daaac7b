"""Reward scores from the engine: a registered reward adapter's scalar head on prompt + text."""

from __future__ import annotations

from core.names import parse_ref
from service.engine import Engine
from service.rewards.protocol import RewardRequest, RewardResponse, RewardScore


class RewardService:
    def __init__(self, engine: Engine):
        self.engine = engine

    async def score(self, request: RewardRequest) -> RewardResponse:
        """One score per completion, in the request's order; higher is better."""
        ref = parse_ref(request.model, param="model")
        scores = await self.engine.score(ref, request.prompt, request.completions)
        return RewardResponse(
            model=request.model, data=[RewardScore(index=i, score=s) for i, s in enumerate(scores)]
        )
