"""Schemas of the jobs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobKindName = Literal["reward", "ppo", "dpo", "round"]
JobStateName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobCreate(BaseModel):
    """A training job: ``kind`` for ``use_case``, with training config overrides in ``params``
    (see docs/jobs.md; a round takes ``algorithm``, ``reward_model`` and ``policy``)."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKindName
    use_case: str = Field(description="The adapter (use case) to train.")
    params: dict[str, Any] = Field(default_factory=dict, description="Config overrides.")
    max_attempts: int | None = Field(
        None, ge=1, le=10, description="Runs of a job whose process died (default: settings)."
    )


class JobProgressPublic(BaseModel):
    step: int | None
    total_steps: int | None
    fraction: float
    eta_seconds: float | None = Field(description="Estimated from the pace so far.")


class JobPublic(BaseModel):
    object: Literal["job"] = "job"
    id: str
    kind: JobKindName
    use_case: str
    state: JobStateName
    params: dict[str, Any]
    attempt: int
    max_attempts: int
    progress: JobProgressPublic
    metrics: dict[str, float | None] = Field(description="The latest value of each series.")
    result: dict[str, Any] | None = Field(description="Registered versions, gates, promotion.")
    error: str | None
    cancel_requested: bool
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobPublic]
    has_more: bool
    last_id: str | None = Field(description="Pass as `after` for the next page.")


class MetricPointPublic(BaseModel):
    step: int
    value: float | None
    time: datetime


class JobMetrics(BaseModel):
    object: Literal["job.metrics"] = "job.metrics"
    job_id: str
    series: dict[str, list[MetricPointPublic]]


class LogLinePublic(BaseModel):
    seq: int
    time: datetime
    line: str


class JobLogEnd(BaseModel):
    """The last event of a followed log: the state the job ended in."""

    state: JobStateName


class JobLogs(BaseModel):
    object: Literal["job.logs"] = "job.logs"
    job_id: str
    data: list[LogLinePublic]
    last_seq: int = Field(description="Pass as `after` to read on.")
