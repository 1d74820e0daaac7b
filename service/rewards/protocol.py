"""Schemas of POST /v1/rewards."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.text_limits import MAX_CANDIDATE_CHARS, MAX_PROMPT_CHARS

MAX_COMPLETIONS = 64


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A reward adapter: 'name', 'name@alias' or 'name@N'.")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    completions: list[Annotated[str, Field(max_length=MAX_CANDIDATE_CHARS)]] = Field(
        min_length=1, max_length=MAX_COMPLETIONS
    )


class RewardScore(BaseModel):
    index: int
    score: float


class RewardResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[RewardScore]
