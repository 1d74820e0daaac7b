"""Schemas of the feedback API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FeedbackCreateRequest(BaseModel):
    """A pairwise preference: ``completion_ids`` (two logged completions of one prompt), or
    ``prompt`` and two ``candidates``; ``choice`` is 0, 1 or "tie"."""

    model_config = ConfigDict(extra="forbid")

    use_case: str = Field(description="The adapter (use case) name the preference is for.")
    # Lengths, emptiness and pairing are checked by the store, one place for API and imports.
    completion_ids: list[str] | None = None
    prompt: str | None = None
    candidates: list[str] | None = None
    choice: Literal[0, 1, "tie"]
    labeler: str | None = None
    source: Literal["human", "model"] = "human"
    metadata: dict[str, Any] = Field(default_factory=dict)


class VertexExportRow(BaseModel):
    """A line of a Vertex export (core.store.records.VertexRow)."""

    input_text: str
    candidate_0: str
    candidate_1: str
    choice: Literal[0, 1, "tie"] = Field(description='"tie" only with include_ties.')


class TrlExportRow(BaseModel):
    """A line of a TRL export (core.store.records.PreferenceRow)."""

    prompt: str
    chosen: str
    rejected: str


class FeedbackPublic(BaseModel):
    id: int
    use_case: str
    prompt: str
    candidates: list[str]
    completion_ids: list[str | None]
    choice: Literal[0, 1, "tie"]
    labeler: str | None
    source: Literal["human", "model"]
    metadata: dict[str, Any]
    created_at: datetime


class RejectedRowPublic(BaseModel):
    line: int
    reason: str


class ImportReportPublic(BaseModel):
    format: Literal["vertex", "trl"]
    accepted: int
    duplicates: int
    rejected_count: int
    rejected: list[RejectedRowPublic]


class SnapshotCreate(BaseModel):
    use_case: str


class SnapshotPublic(BaseModel):
    id: str
    use_case: str
    row_count: int
    sha256: str
    created_at: datetime


class SnapshotList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SnapshotPublic]


class UseCaseStatsPublic(BaseModel):
    use_case: str
    feedback: int
    choice_0: int
    choice_1: int
    ties: int
    human: int
    model: int


class VersionStatsPublic(BaseModel):
    version: str = Field(description="'name@N', or 'base'.")
    model: str = Field(
        description="The same as version, under its first name (kept for old clients)."
    )
    candidates: int
    wins: int
    losses: int
    ties: int


class WinRatePublic(BaseModel):
    a: str
    b: str
    wins: int
    losses: int
    ties: int
    total: int
    win_rate: float | None = Field(description="(wins + ties / 2) / total; null without data.")


class FeedbackStatsPublic(BaseModel):
    use_cases: list[UseCaseStatsPublic]
    versions: list[VersionStatsPublic]
    head_to_head: WinRatePublic | None = None
