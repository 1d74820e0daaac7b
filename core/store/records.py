"""What the store takes and gives back: plain frozen dataclasses, enums and typed dicts.

ORM rows (``models.py``) never leave the store; callers (service, training) see only these, so
a detached row can never lazy-load or be mutated by accident.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, TypedDict

from core.names import AdapterVersion

Choice = Literal[0, 1, "tie"]
"""Which candidate won: 0, 1, or "tie" (stored as -1)."""

FeedbackFormat = Literal["vertex", "trl"]
"""The two feedback file formats, for import and export alike."""

TIE = -1  # the stored value of choice "tie"


class FeedbackSource(StrEnum):
    HUMAN = "human"
    MODEL = "model"


class JobKind(StrEnum):
    REWARD = "reward"
    PPO = "ppo"
    DPO = "dpo"
    ROUND = "round"  # snapshot, reward model, PPO or DPO, gates, promote: one RLHF round


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def new_completion_id() -> str:
    """A fresh OpenAI-style completion id, ``cmpl-<32 hex>``."""
    return f"cmpl-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Completion:
    """One served completion; ``version`` is the adapter version that served it, None for the
    base model.

    ``created_at`` may be left None when logging; the store fills in the time of logging.
    """

    id: str
    prompt: str
    text: str
    version: AdapterVersion | None = None
    sampling_params: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class FeedbackCreate:
    """A new pairwise preference: either ``completion_ids`` (two logged completions with the same
    prompt) or ``prompt`` and ``candidates`` (two texts). ``choice`` names the winner."""

    use_case: str
    choice: Choice
    prompt: str | None = None
    candidates: tuple[str, ...] | list[str] | None = None  # two; the store checks
    completion_ids: tuple[str, ...] | list[str] | None = None
    labeler: str | None = None
    source: FeedbackSource | str = FeedbackSource.HUMAN
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Feedback:
    """A stored pairwise preference (immutable once written)."""

    id: int
    use_case: str
    prompt: str
    candidates: tuple[str, str]
    completion_ids: tuple[str | None, str | None]
    choice: Choice
    labeler: str | None
    source: FeedbackSource
    metadata: dict[str, Any]
    idempotency_key: str | None
    created_at: datetime


class PreferenceRow(TypedDict):
    """One training pair, as TRL's preference datasets name the fields."""

    prompt: str
    chosen: str
    rejected: str


class VertexRow(TypedDict):
    """One row of a Vertex AI RLHF preference dataset."""

    input_text: str
    candidate_0: str
    candidate_1: str
    choice: int | str  # 0 or 1; "tie" only when exporting with include_ties=True


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A line of an import file that was not stored: 1-based line number and the reason."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    """Outcome of one import batch.

    ``accepted`` rows are in the store after the import (``duplicates`` of them were already
    there from an earlier import with the same idempotency key). ``rejected`` lists at most the
    first ``MAX_REPORTED_REJECTIONS`` rejections; ``rejected_count`` counts them all.
    """

    format: FeedbackFormat
    accepted: int
    duplicates: int
    rejected_count: int
    rejected: list[RejectedRow]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable, reproducible set of preference pairs of one use case (ties excluded)."""

    id: str
    use_case: str
    row_count: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UseCaseStats:
    use_case: str
    feedback: int
    choice_0: int
    choice_1: int
    ties: int
    human: int
    model: int


@dataclass(frozen=True, slots=True)
class VersionStats:
    """Candidates (logged completions) of ``version`` in feedback, and how they fared."""

    version: AdapterVersion | None  # None: the base model
    candidates: int
    wins: int
    losses: int
    ties: int


@dataclass(frozen=True, slots=True)
class FeedbackStats:
    use_cases: list[UseCaseStats]
    versions: list[VersionStats]


@dataclass(frozen=True, slots=True)
class WinRate:
    """Head-to-head of ``a`` against ``b`` over feedback whose two candidates are logged
    completions of ``a`` and ``b``. ``win_rate = (wins + ties / 2) / total``; None if no total."""

    a: AdapterVersion | None  # None: the base model
    b: AdapterVersion | None
    wins: int
    losses: int
    ties: int
    total: int
    win_rate: float | None


@dataclass(frozen=True, slots=True)
class Job:
    """A training job. ``attempts`` counts claims; the current attempt is the runner's lease."""

    id: str
    kind: JobKind
    use_case: str
    state: JobState
    params: dict[str, Any]
    progress: float
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    max_attempts: int
    worker: str | None
    cancel_requested: bool
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class MetricPoint:
    step: int
    name: str
    value: float  # NaN when the logged value was not finite
    time: datetime


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int  # increasing; pass the last seen seq as ``after`` to tail a log
    time: datetime
    line: str


Verdict = Literal["0", "1", "tie", "both_bad", "skip"]
"""A labeler's canonical verdict on a pair: completion 0 or 1 better, tie, both bad, or skip."""


@dataclass(frozen=True, slots=True)
class LabelingQueue:
    """Pairs of one use case for people to compare; each pair wants ``overlap`` labelers."""

    id: str
    use_case: str
    name: str
    guidelines: str
    overlap: int
    created_by: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LabelingPair:
    """Two logged completions of one prompt, in canonical order (0, 1)."""

    id: int
    queue_id: str
    prompt: str
    completions: tuple[Completion, Completion]


@dataclass(frozen=True, slots=True)
class Vote:
    """A labeler's raw vote: the canonical verdict, whether completion 1 was shown first (as
    "A"), the time taken and the rationale; ``feedback_id`` is the record it added (not skips)."""

    id: int
    pair_id: int
    labeler: str
    verdict: Verdict
    swapped: bool
    time_ms: int | None
    rationale: str | None
    feedback_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class QueueProgress:
    """A queue's size: pairs, votes (skips excluded), and pairs that have ``overlap`` votes."""

    pairs: int
    votes: int
    complete: int


@dataclass(frozen=True, slots=True)
class LabelerProgress:
    """Where one labeler stands in a queue: ``done`` pairs voted or skipped, ``remaining`` open."""

    done: int
    remaining: int


@dataclass(frozen=True, slots=True)
class Agreement:
    """Two labelers on the pairs both voted on: percent agreement and Cohen's kappa."""

    labeler_a: str
    labeler_b: str
    pairs: int
    percent: float
    kappa: float | None  # None when chance agreement is 1 (both always gave the same verdict)
