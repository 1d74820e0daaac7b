"""Rewards: score completions of a prompt with a reward adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loraloop_client._models import Model, RequestModel

if TYPE_CHECKING:
    from loraloop_client._base import AsyncCore, SyncCore


class RewardRequest(RequestModel):
    component = "RewardRequest"
    model: str
    prompt: str
    completions: list[str]


class RewardScore(Model):
    component = "RewardScore"
    index: int
    score: float


class RewardResponse(Model):
    component = "RewardResponse"
    model: str
    data: list[RewardScore]


class Rewards:
    """``client.rewards``."""

    def __init__(self, core: SyncCore) -> None:
        self._core = core

    def score(self, model: str, prompt: str, completions: list[str]) -> list[float]:
        """The reward of each completion under the reward adapter ``model``; higher is better."""
        body = RewardRequest(model=model, prompt=prompt, completions=completions).model_dump()
        response = RewardResponse.model_validate(self._core.request("POST", "/v1/rewards", json=body).json())
        return [s.score for s in sorted(response.data, key=lambda s: s.index)]


class AsyncRewards:
    """``async_client.rewards``."""

    def __init__(self, core: AsyncCore) -> None:
        self._core = core

    async def score(self, model: str, prompt: str, completions: list[str]) -> list[float]:
        body = RewardRequest(model=model, prompt=prompt, completions=completions).model_dump()
        response = await self._core.request("POST", "/v1/rewards", json=body)
        scores = RewardResponse.model_validate(response.json()).data
        return [s.score for s in sorted(scores, key=lambda s: s.index)]
