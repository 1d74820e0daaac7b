"""Schemas of POST /v1/rewards."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_COMPLETIONS = 64


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A reward adapter: 'name', 'name@alias' or 'name@N'.")
    prompt: str = Field(min_length=1)
    completions: list[str] = Field(min_length=1, max_length=MAX_COMPLETIONS)


class RewardScore(BaseModel):
    index: int
    score: float


class RewardResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[RewardScore]
