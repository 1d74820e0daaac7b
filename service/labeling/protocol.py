"""Schemas of the labeling API (queues of pairs for people to compare)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.store.labeling import MAX_GUIDELINES_CHARS, MAX_OVERLAP
from core.text_limits import MAX_PROMPT_CHARS


class QueueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    use_case: str = Field(description="The adapter (use case) whose completions are compared.")
    name: str = Field("", max_length=256, description="Shown to labelers; default: the use case.")
    guidelines: str = Field("", max_length=MAX_GUIDELINES_CHARS, description="Shown beside each pair.")
    overlap: int = Field(1, ge=1, le=MAX_OVERLAP, description="Labelers wanted per pair.")


class QueueFill(BaseModel):
    """Add pairs: from the completion log, or generated now. With ``b``, one completion of
    ``a`` and one of ``b`` per prompt (production against candidate); without it, two samples
    of ``a`` (different seeds)."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["log", "generate"]
    a: str = Field(description="'base', 'name', 'name@alias' or 'name@N'.")
    b: str | None = None
    limit: int = Field(20, ge=1, le=500, description="log: most pairs to add.")
    prompts: list[Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]] = Field(
        default_factory=list, max_length=100, description="generate: the prompts."
    )
    max_tokens: int = Field(64, ge=1, le=2048, description="generate: longest completion.")
    temperature: float = Field(1.0, ge=0, le=2, description="generate: sampling temperature.")


class FillReport(BaseModel):
    added: int
    skipped: int = Field(0, description="Prompts that gave no usable pair (e.g. two equal texts).")


class QueueProgressPublic(BaseModel):
    pairs: int
    votes: int
    complete: int = Field(description="Pairs with as many votes as the overlap asks for.")


class AgreementPublic(BaseModel):
    labeler_a: str
    labeler_b: str
    pairs: int
    percent: float
    kappa: float | None = Field(description="Cohen's kappa; null when undefined.")


class QueuePublic(BaseModel):
    id: str
    use_case: str
    name: str
    guidelines: str
    overlap: int
    created_by: str | None
    created_at: datetime
    progress: QueueProgressPublic
    agreement: list[AgreementPublic]


class QueueList(BaseModel):
    object: Literal["list"] = "list"
    data: list[QueuePublic]


class VotePublic(BaseModel):
    id: int
    pair_id: int
    labeler: str
    verdict: Literal["0", "1", "tie", "both_bad", "skip"] = Field(
        description="Canonical: completion 0 or 1 better, tie, both bad, or skipped."
    )
    shown: list[str] = Field(description='Which completion was shown as A and as B: ["1", "0"] = swapped.')
    time_ms: int | None
    rationale: str | None
    feedback_id: int | None
    created_at: datetime


class VoteList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VotePublic]
